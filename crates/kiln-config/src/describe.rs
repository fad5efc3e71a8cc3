//! The resolved device graph for people (`kiln describe`) and for Graphviz
//! (`kiln describe --dot`).

use std::fmt::Write as _;

use crate::graph::ChosenBy;
use crate::project::Checked;

/// The graph as text: the unikernel, its devices with their
/// implementations and dependencies, and its arguments.
pub fn text(checked: &Checked) -> String {
    let m = &checked.manifest;
    let g = &checked.graph;
    let mut s = String::new();
    let _ = writeln!(s, "unikernel {} (target {})", m.name.value, g.target);
    if let Some(doc) = &m.doc {
        let _ = writeln!(s, "  {doc}");
    }
    let _ = writeln!(s, "entry: {}", checked.entry.path);
    let _ = writeln!(s, "devices:");
    if m.devices.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    let width = m
        .devices
        .iter()
        .map(|d| d.name.value.len())
        .max()
        .unwrap_or(0);
    for (i, device) in m.devices.iter().enumerate() {
        let r = &g.devices[i];
        let mut line = format!("  {:width$}  {}", device.name.value, device.ty.value);
        if let Some(choice) = r.implementation.choice {
            let by = match r.chosen_by {
                ChosenBy::Only => "",
                ChosenBy::Default => " (default)",
                ChosenBy::Manifest => " (unikernel.toml)",
                ChosenBy::CommandLine => " (command line)",
            };
            let _ = write!(line, ", impl {choice}{by}");
        }
        for (key, to) in &r.uses {
            let _ = write!(line, ", {key} -> {}", m.devices[*to].name.value);
        }
        if !checked.needed[i] {
            line.push_str(", unused on this target");
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s, "arguments:");
    if m.arguments.is_empty() {
        let _ = writeln!(s, "  (none)");
    }
    for arg in &m.arguments {
        let mut line = format!("  --{} <{}>", arg.name.value, arg.ty.value);
        match &arg.default {
            Some(d) => {
                let _ = write!(line, ", default {}", d.value);
            }
            None => line.push_str(", required"),
        }
        if let Some(doc) = &arg.doc {
            let _ = write!(line, ": {doc}");
        }
        let _ = writeln!(s, "{line}");
    }
    s
}

fn dot_id(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The graph in Graphviz's dot language: the entry function, the devices
/// it takes, and the dependencies between devices.
pub fn dot(checked: &Checked) -> String {
    let m = &checked.manifest;
    let g = &checked.graph;
    let mut s = String::new();
    let _ = writeln!(s, "digraph {} {{", dot_id(&m.name.value));
    let _ = writeln!(s, "  rankdir=LR;");
    let _ = writeln!(s, "  node [shape=box];");
    let entry = format!("{}()", checked.entry.path);
    let _ = writeln!(s, "  {} [shape=ellipse];", dot_id(&entry));
    for (i, device) in m.devices.iter().enumerate() {
        let mut label = format!("{}\\n{}", device.name.value, device.ty.value);
        if let Some(choice) = g.devices[i].implementation.choice {
            let _ = write!(label, " ({choice})");
        }
        let style = if checked.needed[i] {
            ""
        } else {
            ", style=dashed"
        };
        let _ = writeln!(
            s,
            "  {} [label=\"{label}\"{style}];",
            dot_id(&device.name.value)
        );
    }
    for p in &checked.entry.params {
        if let crate::entry::Param::Device(i) = p {
            let _ = writeln!(
                s,
                "  {} -> {};",
                dot_id(&entry),
                dot_id(&m.devices[*i].name.value)
            );
        }
    }
    for (i, r) in g.devices.iter().enumerate() {
        for (key, to) in &r.uses {
            let _ = writeln!(
                s,
                "  {} -> {} [label={}];",
                dot_id(&m.devices[i].name.value),
                dot_id(&m.devices[*to].name.value),
                dot_id(key)
            );
        }
    }
    s.push_str("}\n");
    s
}

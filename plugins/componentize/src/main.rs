//! `reten-componentize`: turns Reten policy core modules into components.
//!
//! A policy crate built for `wasm32-unknown-unknown` is a core Wasm module
//! that carries its WIT world in a custom section (put there by
//! `wit-bindgen`). This tool hands each module to
//! [`wit_component::ComponentEncoder`], which reads that section and wraps the
//! module in a component of that world; the component is validated and
//! written as `<out-dir>/<file stem>.wasm`.
//!
//! ```text
//! reten-componentize <core.wasm>... --out-dir <dir>
//! reten-componentize --print-imports <file.wasm>...
//! ```
//!
//! `--print-imports` lists what a component (or a core module) imports: a
//! policy should import nothing but, at most, the type-only interface
//! `reten:policy/types@0.1.0`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use wasmparser::{ComponentTypeRef, Encoding, Parser, Payload, TypeRef};
use wit_component::{ComponentEncoder, DecodedWasm};

const USAGE: &str = "\
usage:
  reten-componentize <core.wasm>... --out-dir <dir>
      Turn each core module into a validated component, written as
      <dir>/<file stem>.wasm.
  reten-componentize --print-imports <file.wasm>...
      List the imports of each component (or core module).
";

enum Command {
    Componentize { inputs: Vec<PathBuf>, out_dir: PathBuf },
    PrintImports { inputs: Vec<PathBuf> },
    Help,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command> {
    let mut inputs = Vec::new();
    let mut out_dir = None;
    let mut print_imports = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--print-imports" => print_imports = true,
            "-o" | "--out-dir" => {
                let dir = args.next().context("--out-dir needs a directory")?;
                out_dir = Some(PathBuf::from(dir));
            }
            _ if arg.starts_with("--out-dir=") => {
                out_dir = Some(PathBuf::from(&arg["--out-dir=".len()..]));
            }
            _ if arg.starts_with('-') => bail!("unknown option `{arg}`\n\n{USAGE}"),
            _ => inputs.push(PathBuf::from(arg)),
        }
    }
    if inputs.is_empty() {
        bail!("no input file\n\n{USAGE}");
    }
    match (print_imports, out_dir) {
        (true, None) => Ok(Command::PrintImports { inputs }),
        (true, Some(_)) => bail!("--print-imports takes no --out-dir\n\n{USAGE}"),
        (false, Some(out_dir)) => Ok(Command::Componentize { inputs, out_dir }),
        (false, None) => bail!("--out-dir is required\n\n{USAGE}"),
    }
}

/// Encodes one core module as a component.
fn componentize(module: &[u8]) -> Result<Vec<u8>> {
    ComponentEncoder::default().validate(true).module(module)?.encode()
}

fn componentize_file(input: &Path, out_dir: &Path) -> Result<PathBuf> {
    let stem = input.file_stem().with_context(|| format!("{}: the input has no file name", input.display()))?;
    let module = std::fs::read(input).with_context(|| format!("{}: cannot read", input.display()))?;
    let component =
        componentize(&module).with_context(|| format!("{}: cannot encode as a component", input.display()))?;
    let mut output = out_dir.join(stem);
    output.set_extension("wasm");
    // Write next to the target and rename, so a watcher never sees half a file.
    let partial = output.with_extension("wasm.partial");
    std::fs::write(&partial, &component).with_context(|| format!("{}: cannot write", partial.display()))?;
    std::fs::rename(&partial, &output).with_context(|| format!("{}: cannot write", output.display()))?;
    Ok(output)
}

/// The imports of a component (its top level only) or of a core module, one
/// line each.
fn imports(bytes: &[u8]) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    let mut depth = 0usize;
    let mut is_component = false;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload? {
            Payload::Version { encoding, .. } => {
                depth += 1;
                if depth == 1 {
                    is_component = encoding == Encoding::Component;
                }
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    let import = import?;
                    let kind = match import.ty {
                        ComponentTypeRef::Module(_) => "core module",
                        ComponentTypeRef::Func(_) => "func",
                        ComponentTypeRef::Value(_) => "value",
                        ComponentTypeRef::Type(_) => "type",
                        ComponentTypeRef::Instance(_) => "instance",
                        ComponentTypeRef::Component(_) => "component",
                    };
                    lines.push(format!("{} ({kind})", import.name.name));
                }
            }
            Payload::ImportSection(section) if depth == 1 && !is_component => {
                for import in section.into_imports() {
                    let import = import?;
                    let kind = match import.ty {
                        TypeRef::Func(_) | TypeRef::FuncExact(_) => "func",
                        TypeRef::Table(_) => "table",
                        TypeRef::Memory(_) => "memory",
                        TypeRef::Global(_) => "global",
                        TypeRef::Tag(_) => "tag",
                    };
                    lines.push(format!("{}::{} (core {kind})", import.module, import.name));
                }
            }
            _ => {}
        }
    }
    if is_component {
        annotate_type_only(bytes, &mut lines);
    }
    Ok(lines)
}

/// Marks the imported interfaces that hold only types (no functions): the
/// host need not supply those.
fn annotate_type_only(bytes: &[u8], lines: &mut [String]) {
    let Ok(DecodedWasm::Component(resolve, world)) = wit_component::decode(bytes) else {
        return;
    };
    for (key, item) in &resolve.worlds[world].imports {
        let wit_parser::WorldItem::Interface { id, .. } = item else {
            continue;
        };
        if !resolve.interfaces[*id].functions.is_empty() {
            continue;
        }
        let name = resolve.name_world_key(key);
        for line in lines.iter_mut() {
            if line.strip_prefix(name.as_str()) == Some(" (instance)") {
                line.push_str(", types only");
            }
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Help => print!("{USAGE}"),
        Command::Componentize { inputs, out_dir } => {
            std::fs::create_dir_all(&out_dir).with_context(|| format!("{}: cannot create", out_dir.display()))?;
            for input in &inputs {
                let output = componentize_file(input, &out_dir)?;
                println!("{} -> {}", input.display(), output.display());
            }
        }
        Command::PrintImports { inputs } => {
            for input in &inputs {
                let bytes = std::fs::read(input).with_context(|| format!("{}: cannot read", input.display()))?;
                let lines = imports(&bytes).with_context(|| format!("{}: not a valid Wasm file", input.display()))?;
                println!("{}:", input.display());
                if lines.is_empty() {
                    println!("  (no imports)");
                }
                for line in lines {
                    println!("  {line}");
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match parse_args(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("reten-componentize: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

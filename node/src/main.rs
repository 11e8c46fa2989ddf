//! `geiger`: placeholder until the node's commands land.
fn main() {
    eprintln!("geiger: not built yet");
    std::process::exit(2);
}

//! Serves folders as public hub repositories until interrupted, for trying the hub client by hand (for example an
//! image build with `--target server-from-hub --build-arg HF_ENDPOINT=URL`):
//!
//! ```sh
//! cargo run -p bulkhead-hub-stand-in --example serve -- sentence-transformers/all-MiniLM-L6-v2=DIR
//! ```
//!
//! Prints the endpoint on the first line of standard output.

use bulkhead_hub_stand_in::{Repo, StandIn};

fn main() {
    let repos: Vec<Repo> = std::env::args()
        .skip(1)
        .map(|arg| match arg.split_once('=') {
            Some((id, dir)) if id.contains('/') && !dir.is_empty() => Repo::public(id, dir),
            _ => {
                eprintln!("usage: serve ORG/NAME=DIR...  (got `{arg}`)");
                std::process::exit(2);
            }
        })
        .collect();
    if repos.is_empty() {
        eprintln!("usage: serve ORG/NAME=DIR...");
        std::process::exit(2);
    }
    let stand_in = match StandIn::start(repos) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("serve: cannot start the stand-in: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", stand_in.url());
    loop {
        std::thread::park();
    }
}

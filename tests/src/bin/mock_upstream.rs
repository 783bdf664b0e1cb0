//! The mock upstream on its own, for trying the gateway by hand:
//! `cargo run -p sluice-tests --bin mock-upstream` prints its URL and serves
//! until interrupted. Faults are chosen by the request's `model` (see `mock.rs`).

#[expect(clippy::print_stdout, reason = "prints the URL to use")]
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mock = sluice_tests::MockUpstream::start().await?;
    println!("mock upstream on {}", mock.url("/v1"));
    tokio::signal::ctrl_c().await?;
    Ok(())
}

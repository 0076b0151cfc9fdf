//! `cutover deploy`: flags in, the deploy's stages (see [`crate::deploy`]) run, the result out
//! as text or `--json`.

use anyhow::Result;

use crate::config::Fleet;
use crate::deploy::{self, report, Options};
use crate::output::Output;

pub async fn run(fleet: &Fleet, opts: Options, json: bool, out: &Output) -> Result<()> {
    let (report, result) = deploy::run(fleet, opts, out).await;
    if opts.dry_run || opts.emit_script {
        return result;
    }
    if json {
        println!("{}", report.to_json());
    } else {
        report::print(&report, out);
    }
    result
}

//! `lifeboat init`: create the repository at the configured location.

use lifeboat::Result;
use lifeboat::repo::Repository;

use super::Ctx;
use super::output::{log_requests, print_json_with_requests};

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(ctx: &Ctx, _: Args) -> Result<i32> {
    let loc = ctx.repo_location()?;
    let repo = Repository::init(&loc)?;
    if ctx.json {
        print_json_with_requests(
            &serde_json::json!({"repository": repo.location(), "id": repo.config().id, "format_version": repo.config().format_version}),
            &repo,
        );
    } else {
        log_requests(&repo);
        println!("created repository {}", repo.location());
    }
    Ok(0)
}

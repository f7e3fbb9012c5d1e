//! A tiny AWS SDK client used by the end-to-end tests and the demo.
//!
//! It resolves credentials exactly as a Rust program in a container would:
//! through aws-config's default provider chain (which ends at the EC2 instance
//! metadata service, i.e. at ec2metaproxy), or with `--imds` through the
//! IMDS credentials provider alone. It then calls STS `GetCallerIdentity` and
//! prints who it is. It prints the access key id and the expiration, never the
//! secret access key nor the session token.
//!
//! Usage: `imds_client [--imds]`
//! Output (one `key=value` per line): `arn=`, `account=`, `access_key_id=`,
//! `expiration=`. On failure it prints the error chain to stderr and exits 1.

use aws_config::BehaviorVersion;
use aws_sdk_sts::config::ProvideCredentials;
use aws_sdk_sts::error::DisplayErrorContext;
use aws_smithy_types::date_time::{DateTime, Format};
use std::process::ExitCode;

async fn run(imds_only: bool) -> Result<(), String> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if imds_only {
        loader = loader.credentials_provider(
            aws_config::imds::credentials::ImdsCredentialsProvider::builder().build(),
        );
    }
    let sdk_config = loader.load().await;

    let provider = sdk_config
        .credentials_provider()
        .ok_or_else(|| "no credentials provider configured".to_string())?;
    let creds = provider
        .provide_credentials()
        .await
        .map_err(|e| format!("resolving credentials: {}", DisplayErrorContext(&e)))?;

    let sts = aws_sdk_sts::Client::new(&sdk_config);
    let who = sts
        .get_caller_identity()
        .send()
        .await
        .map_err(|e| format!("sts:GetCallerIdentity: {}", DisplayErrorContext(&e)))?;

    println!("arn={}", who.arn().unwrap_or(""));
    println!("account={}", who.account().unwrap_or(""));
    println!("access_key_id={}", creds.access_key_id());
    let expiration = creds
        .expiry()
        .and_then(|t| DateTime::from(t).fmt(Format::DateTime).ok())
        .unwrap_or_else(|| "none".to_string());
    println!("expiration={expiration}");
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut imds_only = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--imds" => imds_only = true,
            "-h" | "--help" => {
                println!("usage: imds_client [--imds]");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("imds_client: unknown argument {other:?}");
                return ExitCode::from(2);
            }
        }
    }
    match run(imds_only).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imds_client: error: {e}");
            ExitCode::FAILURE
        }
    }
}

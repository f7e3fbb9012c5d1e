//! The command line: arguments, logging, signals, and the wiring of the
//! parts; what a request does lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;

use ec2metaproxy::broker::{spawn_prefetcher, Broker};
use ec2metaproxy::ccreds::address::ByAddress;
use ec2metaproxy::ccreds::grants::Grants;
use ec2metaproxy::ccreds::ContainerCredentials;
use ec2metaproxy::config::Config;
use ec2metaproxy::credentials::sts::AwsSts;
use ec2metaproxy::credentials::{spawn_refresher, CredentialCache, Timing};
use ec2metaproxy::health;
use ec2metaproxy::imds::token::TokenKey;
use ec2metaproxy::imds::Imds;
use ec2metaproxy::logging;
use ec2metaproxy::platform::docker::DockerSource;
use ec2metaproxy::platform::index::ContainerIndex;
use ec2metaproxy::platform::mapping::StaticMappings;
use ec2metaproxy::reload::Live;
use ec2metaproxy::roles::IamRoleLookup;
use ec2metaproxy::server::{serve_all, Limits};

/// Serves each Docker container the AWS credentials of the IAM role its
/// ec2metaproxy.RoleAlias label names, through the EC2 instance metadata API.
#[derive(FromArgs)]
struct Args {
    /// the JSON config file
    #[argh(option, short = 'c')]
    config: Option<PathBuf>,
    /// validate the config file, print a summary and exit (0 when valid)
    #[argh(switch)]
    check: bool,
    /// print the version and exit
    #[argh(switch)]
    version: bool,
    /// write a new token for this grant of containerCredentials and exit; a
    /// running proxy refuses the old token within a second
    #[argh(option)]
    rotate_grant: Option<String>,
}

fn fail(error: &dyn std::error::Error, hint: Option<String>) -> ExitCode {
    eprintln!("error: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    if let Some(hint) = hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    ec2metaproxy::sys::limit_malloc_arenas();
    let args: Args = argh::from_env();
    if args.version {
        println!("ec2metaproxy {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let Some(path) = args.config else {
        eprintln!("error: no config file given");
        eprintln!("hint: ec2metaproxy -c config.json (see config.example.json)");
        return ExitCode::from(2);
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            let hint = error.hint();
            // The message already names the file; no chain to repeat.
            eprintln!("error: {error}");
            if let Some(hint) = hint {
                eprintln!("hint: {hint}");
            }
            return ExitCode::FAILURE;
        }
    };
    if let Some(name) = args.rotate_grant {
        return rotate_grant(&config, &name);
    }
    if args.check {
        println!(
            "{}: OK: {} aliases, default \"{}\", listen {}",
            path.display(),
            config.live.aliases.len(),
            config.live.default_alias,
            listen_text(&config.fixed.listen)
        );
        return ExitCode::SUCCESS;
    }

    let default_level = if config.fixed.verbose {
        "debug"
    } else {
        "info"
    };
    // RUST_LOG wins over `verbose`. The AWS and HTTP crates stay at warn so that
    // debug never prints their request dumps.
    logging::init(
        config.fixed.log_format,
        &format!("warn,ec2metaproxy={default_level}"),
    );

    // With no metadata service, aws-config's chain must not look for the
    // proxy's own credentials at 169.254.169.254: that is this proxy, asking
    // itself (each attempt times out after a second). Set before any thread starts.
    if config.fixed.metadata_url.is_none()
        && std::env::var_os("AWS_EC2_METADATA_DISABLED").is_none()
    {
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }

    let open_files = ec2metaproxy::sys::raise_open_file_limit();
    log::debug!("open-file limit: {open_files:?}");

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error, None),
    };
    let code = runtime.block_on(run(config));
    logging::flush();
    code
}

/// `--rotate-grant NAME`: a new token in the grant's file, atomically. The
/// token itself is never printed: the file is how it is handed over.
fn rotate_grant(config: &Config, name: &str) -> ExitCode {
    let known = config
        .fixed
        .container_credentials
        .as_ref()
        .is_some_and(|cc| cc.grants.contains_key(name));
    if !known {
        eprintln!("error: \"{name}\" is no grant of containerCredentials.grants");
        return ExitCode::FAILURE;
    }
    let dir = config.fixed.grants_dir();
    match ec2metaproxy::ccreds::grants::rotate(&dir, name) {
        Ok(_) => {
            println!(
                "grant \"{name}\": new token in {}; the old one is refused within a second",
                dir.join(name).join("token").display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error, None),
    }
}

/// Reads the host's instance ID from the metadata service once, for the
/// `{instanceId}` of tagging templates. Bounded: a host without one starts
/// anyway, and the templates render it empty.
async fn read_instance_id(url: &http::Uri) {
    use http_body_util::BodyExt;
    let upstream = ec2metaproxy::imds::upstream::Upstream::new(url);
    let fetched = tokio::time::timeout(Duration::from_secs(3), async {
        let response = upstream
            .fetch(&http::Method::GET, "/latest/meta-data/instance-id")
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|_| Err("no answer within 3 s".into()));
    match fetched {
        Ok(id) => {
            log::info!("instance ID {id} (for {{instanceId}} in tagging templates)");
            ec2metaproxy::tagging::set_instance_id(id.trim().to_string());
        }
        Err(why) => log::warn!(
            "cannot read the instance ID from {url} ({why}); {{instanceId}} in tagging templates is empty"
        ),
    }
}

async fn run(config: Config) -> ExitCode {
    let fixed = &config.fixed;
    let tokens = match TokenKey::load_or_create(&fixed.state_dir) {
        Ok(key) => key,
        Err(error) => {
            return fail(
                &error,
                Some(
                    "set \"stateDir\" in the config to a directory only the proxy can read".into(),
                ),
            )
        }
    };
    let by_token = match &fixed.container_credentials {
        Some(cc) if !cc.listen.is_empty() => {
            let grants = match Grants::open(&fixed.grants_dir(), cc.grants()) {
                Ok(grants) => Arc::new(grants),
                Err(error) => {
                    return fail(
                        &error,
                        Some("the token directory is stateDir/grants; set \"stateDir\" to a directory only the proxy can write".into()),
                    )
                }
            };
            let Some(listeners) = bind_all(&cc.listen, " (containerCredentials.listen)") else {
                return ExitCode::FAILURE;
            };
            Some((grants, listeners))
        }
        _ => None,
    };
    let by_address = match &fixed.container_credentials {
        Some(cc) => match bind_all(&cc.address_listen, " (containerCredentials.addressListen)") {
            Some(listeners) => listeners,
            None => return ExitCode::FAILURE,
        },
        None => Vec::new(),
    };
    let Some(listeners) = bind_all(&fixed.listen, "") else {
        return ExitCode::FAILURE;
    };
    let docker = match DockerSource::new(&fixed.docker_host) {
        Ok(docker) => docker.reading_env(config.roles().env_keys()),
        Err(error) => return fail(&error, None),
    };
    let (sts, aws, region) = AwsSts::from_env(fixed.sts_region.as_deref()).await;

    log::info!(
        "ec2metaproxy {} config={} listen={} aliases={} default={} docker={} sts_region={} metadata={}",
        env!("CARGO_PKG_VERSION"),
        config
            .source
            .as_ref()
            .map_or("(embedded)".to_string(), |p| p.display().to_string()),
        listen_text(
            &listeners
                .iter()
                .filter_map(|l| l.local_addr().ok())
                .collect::<Vec<_>>()
        ),
        config.live.aliases.len(),
        config.live.default_alias,
        fixed.docker_host,
        region,
        fixed
            .metadata_url
            .as_ref()
            .map_or("none".to_string(), |u| u.to_string()),
    );

    let metrics_listener = match fixed.metrics_listen {
        None => None,
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(error) => {
                eprintln!("error: cannot listen on {addr} (metricsListen): {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let index = ContainerIndex::watch(Arc::new(docker));
    let credentials = Arc::new(CredentialCache::new(
        Arc::new(sts),
        Timing::for_duration(fixed.session_duration),
    ));
    spawn_refresher(&credentials);
    let source = config.source.clone();
    let mapping_file = fixed.role_mapping_file.clone();
    let config_docker_host = fixed.docker_host.clone();
    let require_caller_proof = fixed.require_caller_proof;
    let metadata = config.metadata_source(&region);
    if let Some(url) = fixed
        .metadata_url
        .as_ref()
        .filter(|_| config.names_instance_id())
    {
        read_instance_id(url).await;
    }
    let live = Arc::new(Live::new(config));
    if let Some(path) = source {
        if let Err(error) = ec2metaproxy::reload::spawn(path.clone(), live.clone()) {
            log::warn!(
                "cannot watch {} for changes ({error}); reload with SIGHUP instead",
                path.display()
            );
        }
    }
    let (stopping, stop) = tokio::sync::watch::channel(false);
    if let Some(listener) = metrics_listener {
        log::info!(
            "health and metrics on http://{}/ (healthz, readyz, metrics)",
            listener
                .local_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string())
        );
        let readiness = Arc::new(health::ProxyReadiness {
            index: index.clone(),
            credentials: credentials.clone(),
        });
        let mut stop = stop.clone();
        tokio::spawn(health::serve(listener, readiness, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    report_caller_proof(&config_docker_host, require_caller_proof);
    let changes = index.subscribe();
    let mut broker = Broker::new(index, credentials, live.roles())
        .with_role_lookup(Arc::new(IamRoleLookup::new(&aws)))
        .requiring_proof(require_caller_proof);
    if let Some(path) = mapping_file {
        let mappings = match StaticMappings::load(&path) {
            Ok(mappings) => Arc::new(mappings),
            Err(error) => {
                eprintln!("error: roleMappingFile: {error}");
                return ExitCode::FAILURE;
            }
        };
        let watched = mappings.clone();
        let file = path.clone();
        if let Err(error) = ec2metaproxy::reload::watch(path.clone(), move || watched.reload(&file))
        {
            log::warn!(
                "cannot watch {} for changes ({error}); reload with SIGHUP instead",
                path.display()
            );
        }
        broker = broker.with_static_mappings(mappings);
    }
    let broker = Arc::new(broker);
    spawn_prefetcher(broker.clone(), changes);
    if let Some((grants, listeners)) = by_token {
        for grant in grants.grants() {
            log::info!(
                "grant {} (alias {}): token in {}",
                grant.name,
                grant.alias,
                grants.path(&grant.name).display()
            );
        }
        spawn_grant_refresher(grants.clone());
        let door = Arc::new(ContainerCredentials::new(broker.clone(), grants));
        log::info!(
            "container credentials (by token) on {}",
            listen_text(
                &listeners
                    .iter()
                    .filter_map(|l| l.local_addr().ok())
                    .collect::<Vec<_>>()
            )
        );
        let mut stop = stop.clone();
        tokio::spawn(serve_all(listeners, door, Limits::default(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    if !by_address.is_empty() {
        log::info!(
            "container credentials (by address, 169.254.170.2 by DNAT) on {}",
            listen_text(
                &by_address
                    .iter()
                    .filter_map(|l| l.local_addr().ok())
                    .collect::<Vec<_>>()
            )
        );
        let mut stop = stop.clone();
        let door = Arc::new(ByAddress::new(broker.clone()));
        tokio::spawn(serve_all(by_address, door, Limits::default(), async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    let imds = Arc::new(Imds::new(broker, live.imds_settings(), tokens, metadata));
    ec2metaproxy::sys::spawn_heap_trimmer();
    serve_all(listeners, imds, Limits::default(), async {
        shutdown_signal().await;
        let _ = stopping.send(true);
    })
    .await;
    log::info!("stopped");
    ExitCode::SUCCESS
}

/// Re-reads the grants' token files every second, so that a rotated or
/// deleted token stops working without a restart. A failure is logged when
/// it first appears, not every second.
fn spawn_grant_refresher(grants: Arc<Grants>) {
    tokio::spawn(async move {
        let mut last_error = None;
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let grants = grants.clone();
            let refreshed = tokio::task::spawn_blocking(move || grants.refresh()).await;
            let error = match refreshed {
                Ok(Ok(())) => None,
                Ok(Err(error)) => Some(error.to_string()),
                Err(error) => Some(error.to_string()),
            };
            if error != last_error {
                match &error {
                    Some(error) => log::warn!("grant tokens: {error}"),
                    None => log::info!("grant tokens readable again"),
                }
                last_error = error;
            }
        }
    });
}

/// Binds every address of `addresses`, or says which one failed (`what`
/// names its key) and gives up.
fn bind_all(
    addresses: &[std::net::SocketAddr],
    what: &str,
) -> Option<Vec<tokio::net::TcpListener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for &addr in addresses {
        match ec2metaproxy::server::bind(addr) {
            Ok(listener) => listeners.push(listener),
            Err(error) => {
                eprintln!("error: cannot listen on {addr}{what}: {error}");
                return None;
            }
        }
    }
    Some(listeners)
}

/// The listen addresses as one log field: `a,b`.
fn listen_text(addresses: &[std::net::SocketAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// Says once, at start, whether each connection can be proven to be its
/// container's, and what follows when it cannot.
fn report_caller_proof(docker_host: &str, required: bool) {
    let obstacles = ec2metaproxy::platform::process::proof_obstacles(docker_host);
    if obstacles.is_empty() {
        log::info!("a connection is served as a container's only once it is found in that container's network namespace");
    } else if required {
        log::warn!(
            "callers cannot be proven to be their containers: {}; requireCallerProof is on, so \
             containers get no credentials (fix the above, or set requireCallerProof to false \
             to serve them by source address alone; see docs/security.md)",
            obstacles.join("; ")
        );
    } else {
        log::warn!(
            "callers cannot be proven to be their containers: {}; serving them by source \
             address alone, as requireCallerProof is false (see docs/security.md)",
            obstacles.join("; ")
        );
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: shutting down"),
        _ = term.recv() => log::info!("SIGTERM: shutting down"),
    }
}

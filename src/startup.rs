//! Application: opens the database and storage, repairs what a crash left, binds the listener
//! and builds the shared state once, outside the per-worker app factory, so every worker
//! shares it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix_service::{fn_service, map_config, IntoServiceFactory, ServiceFactoryExt};
use actix_web::dev::{AppConfig, Extensions, Server};
use actix_web::{web, App};
use tracing::{info, warn};

use crate::cluster::{Cluster, LocalCluster, PgCluster};
use crate::config::{Config, ConfigError};
use crate::hooks::Hooks;
use crate::http::{self, Ctx};
use crate::meta::{Backend, MetaError, SqlMeta};
use crate::metrics::Metrics;
use crate::store::{FsStore, S3Config, S3Store, Store, StoreError};
use crate::upload::{Engine, MinRate, Settings, UploadError};

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot create or sync the data directory {0}: {1}")]
    DataDir(std::path::PathBuf, std::io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("repairing uploads after a crash: {0}")]
    Reconcile(#[from] UploadError),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("--storage {0}: give a directory or s3://BUCKET[/PREFIX]")]
    Storage(String),
    #[error("{0} refused a test write (check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, the bucket and --s3-endpoint): {1}")]
    StoreRefused(String, StoreError),
    #[error("--database-url postgres://… is for many instances, which must share their bytes as well: add --storage s3://BUCKET[/PREFIX]")]
    SharedDatabaseLocalBytes,
    #[error("--s3-part-size must be from 5M to 5G (S3's smallest and largest parts), not {0}")]
    PartSize(u64),
    #[error("{0} is reachable from other machines and no --token is set: add --token or --token-file, or --allow-anonymous to let anyone create uploads")]
    AnonymousOnPublicAddress(SocketAddr),
    #[error("the hooks cannot be set up: {0}")]
    Hooks(crate::hooks::HookError),
}

pub struct Application {
    addr: SocketAddr,
    server: Server,
    engine: Arc<Engine>,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, StartupError> {
        let engine = open_engine(&config).await?;
        let listener = TcpListener::bind(&config.bind)
            .map_err(|e| StartupError::Bind(config.bind.clone(), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartupError::Bind(config.bind.clone(), e))?;
        let (ctx, policy) = http_context(&config, addr)?;
        let server = serve(&config, listener, engine.clone(), ctx, policy)?;
        Ok(Application {
            addr,
            server,
            engine,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until SIGINT or SIGTERM, then stops accepting, lets open appends commit what
    /// they hold and answer, and returns.
    pub async fn run(self) -> std::io::Result<()> {
        let handle = self.server.handle();
        let sweeper = actix_web::rt::spawn(sweep_expired(self.engine.clone()));
        let engine = self.engine.clone();
        let outbox = actix_web::rt::spawn(async move { engine.deliver_events().await });
        let mut server = self.server;
        let result = tokio::select! {
            result = &mut server => result,
            () = shutdown_signal() => {
                info!("shutting down: committing open appends");
                self.engine.stop_appends();
                // The server future processes the stop command, so it must keep being polled.
                actix_web::rt::spawn(async move { handle.stop(true).await });
                server.await
            }
        };
        sweeper.abort();
        outbox.abort();
        result
    }
}

/// Opens the metadata backend and the byte store the config names, builds the engine over
/// them, and repairs what an unclean stop left behind.
async fn open_engine(config: &Config) -> Result<Arc<Engine>, StartupError> {
    crate::store::dirs::create(&config.data_dir)
        .map_err(|e| StartupError::DataDir(config.data_dir.clone(), e))?;
    let url = config.database_url();
    let backend = Backend::of(&url);
    // Instances over one database must share their bytes too: a directory is one machine's.
    let in_object_store = config
        .storage
        .as_deref()
        .is_some_and(|s| s.starts_with("s3://"));
    if backend == Some(Backend::Postgres) && !in_object_store {
        return Err(StartupError::SharedDatabaseLocalBytes);
    }
    // SQLite takes one writer at a time; PostgreSQL serves several instances' appends at once.
    let connections = match backend {
        Some(Backend::Postgres) => 16,
        _ => 4,
    };
    let meta = SqlMeta::connect(&url, connections).await?;
    // SQLite syncs the directory of the journal it creates, never of the database file: a
    // power cut could otherwise take a new database, and every upload in it, away. With the
    // default layout the files directory's creation syncs this directory too (the power-cut
    // test passes without this call); with the bytes elsewhere this is the only sync.
    if let Some(file) = sqlite_file(&url) {
        crate::store::dirs::sync_parent(&file).map_err(|e| StartupError::DataDir(file, e))?;
    }
    // Over PostgreSQL, other instances may share the uploads: locks and progress go through it.
    let cluster: Arc<dyn Cluster> = match backend {
        Some(Backend::Postgres) => Arc::new(
            PgCluster::connect(&url)
                .await
                .map_err(|e| StartupError::Meta(e.into()))?,
        ),
        _ => Arc::new(LocalCluster::default()),
    };
    let OpenedStore {
        store,
        limit: store_limit,
        metrics,
    } = open_store(config).await?;
    let mut settings = settings(config, store.as_ref()).await?;
    // An object store takes at most so many parts of a bounded size: larger creates are 413.
    settings.max_upload_size = match (settings.max_upload_size, store_limit) {
        (Some(max), Some(limit)) => Some(max.min(limit)),
        (max, limit) => max.or(limit),
    };
    let metrics = Arc::new(metrics.named(&config.instance_name()));
    let hooks = match config.hooks()? {
        Some(hooks) => Some(Arc::new(
            Hooks::new(hooks, metrics.clone()).map_err(StartupError::Hooks)?,
        )),
        None => None,
    };
    let engine =
        Arc::new(Engine::new(Arc::new(meta), store, cluster, metrics, settings).with_hooks(hooks));
    let repaired = engine.reconcile().await?;
    if repaired > 0 {
        warn!(repaired, "uploads repaired after an unclean stop");
    }
    let purged = engine.purge_removed().await?;
    if purged > 0 {
        warn!(
            purged,
            "bytes of removed uploads deleted after an unclean stop"
        );
    }
    Ok(engine)
}

/// The file an SQLite URL names (none in memory or for another database).
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    match path {
        "" | ":memory:" => None,
        _ => Some(PathBuf::from(path)),
    }
}

/// A byte store, with what follows from its kind.
struct OpenedStore {
    store: Arc<dyn Store>,
    /// The largest upload it takes, where it has a limit.
    limit: Option<u64>,
    /// What /metrics counts, with the store's requests where it makes some.
    metrics: Metrics,
}

/// The byte store `--storage` names: a directory, or an S3-compatible object store.
async fn open_store(config: &Config) -> Result<OpenedStore, StartupError> {
    let storage = config.storage.as_deref();
    let Some(location) = storage.and_then(|s| s.strip_prefix("s3://")) else {
        let directory = storage.map_or_else(|| config.data_dir.join("files"), Into::into);
        return Ok(OpenedStore {
            store: Arc::new(FsStore::open(&directory)?),
            limit: None,
            metrics: Metrics::default(),
        });
    };
    let storage = storage.unwrap_or_default();
    let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
    if bucket.is_empty() {
        return Err(StartupError::Storage(storage.to_owned()));
    }
    // S3's smallest and largest parts.
    if !(5 << 20..=5 << 30).contains(&config.s3_part_size) {
        return Err(StartupError::PartSize(config.s3_part_size));
    }
    let region = config
        .s3_region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .unwrap_or_else(|| "us-east-1".to_owned());
    let store = S3Store::open(&S3Config {
        bucket: bucket.to_owned(),
        prefix: prefix.to_owned(),
        endpoint: config.s3_endpoint.clone(),
        region,
        part_size: config.s3_part_size,
    })?;
    // A store that refuses us (wrong keys, no such bucket) will refuse every upload: say so
    // now. One that cannot be reached may come back: start, with /healthz answering 503.
    match store.check_writable().await {
        Ok(()) => {}
        Err(e) if e.is_unavailable() => {
            warn!(error = %e, "the object store is unreachable; starting anyway")
        }
        Err(e) => return Err(StartupError::StoreRefused(storage.to_owned(), e)),
    }
    Ok(OpenedStore {
        limit: Some(store.max_upload_size()),
        metrics: Metrics::with_store(store.metrics()),
        store: Arc::new(store),
    })
}

async fn settings(config: &Config, store: &dyn Store) -> Result<Settings, StartupError> {
    Ok(Settings {
        max_upload_size: config.max_upload_size,
        expire_after: config.expire_after,
        forget_after: config.forget_after,
        idle_timeout: config.idle_timeout,
        min_free_space: match config.min_free_space {
            Some(0) => None,
            Some(bytes) => Some(bytes),
            // 5 % of the disk, at most 1 GiB; nothing for a store without a disk.
            None => store
                .space()
                .await?
                .map(|space| (space.total_bytes / 20).min(1 << 30)),
        },
        max_appends: config.max_appends,
        max_appends_per_client: config.max_appends_per_client,
        min_body_rate: config
            .min_body_rate
            .0
            .map(|(bytes, window)| MinRate { bytes, window }),
    })
}

/// What the handlers need besides the engine: limits, tokens and the browser policy.
fn http_context(
    config: &Config,
    addr: SocketAddr,
) -> Result<(web::Data<Ctx>, Arc<http::Policy>), StartupError> {
    let open_files = raise_open_file_limit();
    // Half of the descriptors left after a small reserve may be watchers; the other half
    // stays for uploads (a socket and a file each), downloads, the database and accepting.
    let max_watchers = config
        .max_watchers
        .min(usize::try_from(open_files.saturating_sub(64) / 2).unwrap_or(usize::MAX));
    info!(
        open_files,
        max_watchers,
        max_appends = config.max_appends,
        max_appends_per_client = config.max_appends_per_client,
        "limits"
    );
    let tokens = config.tokens()?;
    if tokens.is_empty() && !addr.ip().is_loopback() {
        if !config.allow_anonymous {
            return Err(StartupError::AnonymousOnPublicAddress(addr));
        }
        warn!(%addr, "no token: anyone who can reach this address may create uploads (--allow-anonymous)");
    }
    let policy = Arc::new(http::Policy::new(
        addr,
        config.public_url.as_deref(),
        &config.allowed_hosts,
        &config.allowed_origins,
    ));
    let ctx = web::Data::new(Ctx {
        public_url: config.public_url.clone(),
        policy: policy.clone(),
        create_rate: http::CreateRate::new(config.create_rate.0, config.create_burst),
        metrics_token: config.metrics_token()?.map(|t| http::Tokens::new(&[t])),
        watchers: http::WatcherSlots::new(max_watchers, config.max_watchers_per_upload),
        tokens: http::Tokens::new(&tokens),
        max_header_size: usize::try_from(config.max_header_size).unwrap_or(usize::MAX),
    });
    Ok((ctx, policy))
}

/// What actix-web's HttpServer does, but over `GatedStream` (see src/http/conn.rs).
fn serve(
    config: &Config,
    listener: TcpListener,
    engine: Arc<Engine>,
    ctx: web::Data<Ctx>,
    policy: Arc<http::Policy>,
) -> Result<Server, StartupError> {
    let addr = listener
        .local_addr()
        .map_err(|e| StartupError::Bind(config.bind.clone(), e))?;
    let engine_data = web::Data::from(engine);
    let tutorial_api = config.tutorial_api;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let factory = move || {
        let app = App::new()
            .app_data(engine_data.clone())
            .app_data(ctx.clone())
            .wrap(actix_web::middleware::from_fn(http::hook_context))
            .wrap(actix_web::middleware::from_fn(http::protocol_middleware))
            .wrap(actix_web::middleware::from_fn(http::limit_header_size))
            .wrap(actix_web::middleware::from_fn(http::browser_safety))
            .wrap(cors(policy.clone()))
            // Outermost: requests the middlewares above refuse are logged too.
            .wrap(http::request_log())
            .configure(|cfg| {
                if tutorial_api {
                    http::tutorial_routes(cfg);
                }
            })
            .configure(http::routes);
        let app = app
            .into_factory()
            .map_err(|e: actix_web::Error| e.error_response());
        let service = actix_http::HttpService::build()
            .client_disconnect_timeout(Duration::from_secs(1))
            // A client that closes its side is gone: its SSE stream or long poll ends now,
            // not at the next heartbeat. (A body being read keeps its bytes: conn.rs holds
            // the EOF back until the body has them all.)
            .h1_allow_half_closed(false)
            .local_addr(addr)
            .on_connect_ext(|io: &http::GatedStream, data: &mut Extensions| {
                data.insert(io.gate());
            })
            .h1(map_config(app, |_| AppConfig::default()));
        fn_service(|io: actix_web::rt::net::TcpStream| {
            let peer = io.peer_addr().ok();
            std::future::ready(Ok((http::GatedStream::new(io), peer)))
        })
        .and_then(service)
    };
    Ok(actix_server::Server::build()
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(30)
        .listen("resumable", listener, factory)
        .map_err(|e| StartupError::Bind(config.bind.clone(), e))?
        .run())
}

/// CORS for browser clients on other origins (tus-js-client, Uppy): the listed origins, and
/// the request's own host, may call every endpoint and read the protocol headers.
fn cors(policy: Arc<http::Policy>) -> actix_cors::Cors {
    actix_cors::Cors::default()
        .allowed_origin_fn(move |origin, _| origin.to_str().is_ok_and(|o| policy.origin_allowed(o)))
        .allowed_methods(["GET", "HEAD", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allow_any_header()
        .expose_headers([
            "Location",
            "Upload-Offset",
            "Upload-Length",
            "Upload-Metadata",
            "Upload-Expires",
            "Upload-Defer-Length",
            "Upload-Concat",
            "Upload-Complete",
            "Upload-Limit",
            "Upload-Draft-Interop-Version",
            "Tus-Resumable",
            "Tus-Version",
            "Tus-Extension",
            "Tus-Max-Size",
            "Tus-Checksum-Algorithm",
            "Content-Disposition",
            "ETag",
        ])
        .max_age(86_400)
}

/// Raises the soft limit on open files to the hard one (every connection, watcher and
/// streaming append holds descriptors) and returns the soft limit in force.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Removes expired uploads, and bytes removals left behind, a few times per expiry period.
async fn sweep_expired(engine: Arc<Engine>) {
    let every = (engine.settings().expire_after / 4)
        .clamp(Duration::from_millis(250), Duration::from_secs(60));
    let mut ticker = tokio::time::interval(every);
    loop {
        ticker.tick().await;
        match engine.expire_due().await {
            Ok(0) => {}
            Ok(removed) => info!(removed, "expired uploads removed"),
            Err(e) => warn!(error = %e, "expiry sweep failed"),
        }
        // Bytes a removal could not delete (a failed unlink) are retried here.
        if let Err(e) = engine.purge_removed().await {
            warn!(error = %e, "purging removed uploads failed");
        }
        match engine.forget_removed().await {
            Ok(0) => {}
            Ok(forgotten) => info!(forgotten, "old tombstones forgotten"),
            Err(e) => warn!(error = %e, "forgetting old tombstones failed"),
        }
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

//! `attendance`: the kiosk daemon and its admin CLI.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Parser, Subcommand};

use attendance::app::control::{self, ControlRequest};
use attendance::app::{self, RunOptions};
use attendance::clock::{Clock, SimulatedClock, SystemClock};
use attendance::config::{self, ConfigPaths};
use attendance::domain::payload;
use attendance::domain::record::StudentNumber;
use attendance::input::replay::ReplaySource;
use attendance::secrets::Secrets;
use attendance::store::{ReadOnlyStore, StudentRow};
use attendance::{demo, logging};

#[derive(Parser)]
#[command(
    name = "attendance",
    version,
    about = "School attendance kiosk: QR scans to durable attendance records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// The image's config layer.
    #[arg(long, default_value = config::SYSTEM_CONFIG, env = "ATTENDANCE_SYSTEM_CONFIG")]
    system_config: PathBuf,
    /// The device's config layer (wins over the image's).
    #[arg(long, default_value = config::DEVICE_CONFIG, env = "ATTENDANCE_DEVICE_CONFIG")]
    device_config: PathBuf,
    /// Overrides the `data_dir` key.
    #[arg(long, env = "ATTENDANCE_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> Result<config::Loaded, config::ConfigError> {
        let paths = ConfigPaths {
            system: self.system_config.clone(),
            device: self.device_config.clone(),
        };
        config::load(&paths, self.data_dir.as_deref())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (systemd Type=notify service).
    Run {
        #[command(flatten)]
        config: ConfigArgs,
        /// Testing aid: start the clock at this RFC 3339 instant instead of the system time.
        #[arg(long, hide = true)]
        simulated_clock: Option<DateTime<chrono::FixedOffset>>,
        /// Testing aid: how many times faster than real time the simulated clock runs.
        #[arg(long, hide = true, default_value_t = 1)]
        clock_speed: u32,
    },
    /// Run a demo kiosk on this machine: local data folder, sample roster, scripted scans.
    Demo {
        /// Folder for the demo's config and data.
        #[arg(long, default_value = "demo-data")]
        dir: PathBuf,
        /// Address of the health endpoint.
        #[arg(long, default_value = "127.0.0.1:8080")]
        http: String,
        /// How many times faster than real time the school morning runs.
        #[arg(long, default_value_t = 120)]
        speed: u32,
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Validate the configuration and print the effective config (secrets redacted).
    CheckConfig {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// The student roster cache.
    Students {
        #[command(subcommand)]
        command: StudentsCommand,
    },
    /// Export attendance records as CSV.
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// First school date (YYYY-MM-DD).
        #[arg(long)]
        from: NaiveDate,
        /// Last school date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: NaiveDate,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Inject one payload into the running daemon (commissioning, tests).
    Scan {
        #[command(flatten)]
        config: ConfigArgs,
        payload: String,
    },
    /// Exit 0 when the daemon's /health answers 200.
    Health {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Keep asking for up to this many seconds.
        #[arg(long, default_value_t = 0)]
        wait: u64,
    },
    /// Cloud sync administration.
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Signed student cards.
    Cards {
        #[command(subcommand)]
        command: CardsCommand,
    },
    /// Fleet updates: the hawkBit DDI agent (its own systemd unit).
    Ota {
        #[command(subcommand)]
        command: OtaCommand,
    },
    /// Read the QR code in each image file (PNG, JPEG, PGM) with the kiosk's decoder.
    Decode {
        #[arg(required_unless_present = "camera")]
        files: Vec<PathBuf>,
        /// Instead of files: grab frames from this V4L2 device (`demo`: generated stream).
        #[arg(long)]
        camera: Option<PathBuf>,
        /// Frames to grab with --camera.
        #[arg(long, default_value_t = 30)]
        frames: usize,
        /// Pixel format asked of the camera: mjpeg, yuyv or grey.
        #[arg(long, default_value = "mjpeg")]
        format: String,
        #[arg(long, default_value_t = 1280)]
        width: u32,
        #[arg(long, default_value_t = 720)]
        height: u32,
    },
}

#[derive(Subcommand)]
enum StudentsCommand {
    /// Import students from a CSV file (header: student_number,full_name,grade,section,guardian_phone,active).
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        csv: PathBuf,
    },
    /// List the students in the roster cache.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum SyncCommand {
    /// Outbox rows the sync engine will not send again (refused by the cloud or invalid).
    Quarantine {
        #[command(subcommand)]
        command: QuarantineCommand,
    },
}

#[derive(Subcommand)]
enum QuarantineCommand {
    /// List quarantined rows (seq, record, reason; never the payload).
    List {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Queue the records of these rows again (their current state), or all with --all.
    Retry {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
        #[arg(required_unless_present = "all")]
        seqs: Vec<i64>,
    },
    /// Delete these quarantined rows for good (the records stay, unsynced), or all with --all.
    Discard {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long, conflicts_with = "seqs")]
        all: bool,
        #[arg(required_unless_present = "all")]
        seqs: Vec<i64>,
    },
}

#[derive(Subcommand)]
enum OtaCommand {
    /// Run the update agent until SIGTERM (attendance-ota.service).
    Run {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Print the agent's persisted state as JSON.
    Status {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum CardsCommand {
    /// Print the signed QR payload for each student number: Ed25519 (ATT2)
    /// with --key, else HMAC (ATT1) with <data_dir>/secrets/qr-keys/<KEY_ID>.key.
    Sign {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        key_id: String,
        /// The office's Ed25519 private key (<KEY_ID>.secret from `cards keygen`).
        #[arg(long)]
        key: Option<PathBuf>,
        students: Vec<String>,
    },
    /// Make an Ed25519 key pair: DIR/<KEY_ID>.secret stays at the school
    /// office, DIR/<KEY_ID>.pub goes to every kiosk's secrets/qr-keys/.
    Keygen {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        out: PathBuf,
    },
}

/// Students per control-socket request of `students import`.
const IMPORT_CHUNK: usize = 5000;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, leaving out a cause its parent already quotes.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // Two workers are plenty for a kiosk and keep the idle footprint small.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Decode {
            files,
            camera,
            frames,
            format,
            width,
            height,
        } => {
            use attendance::input::decode::cli;
            let decoder = attendance::input::decode::DecoderConfig::default();
            match camera {
                Some(dev) => {
                    let cam = cli::camera_config(&dev, &format, width, height)?;
                    cli::run_camera(&decoder, &cam, frames)?
                }
                None => cli::run(&decoder, &files)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            config,
            simulated_clock,
            clock_speed,
        } => {
            // A device layer that a power cut or a bad edit broke must not stop
            // the kiosk (systemd would restart it in a loop and RAUC would
            // roll back a good slot): run on the image's layer, degraded.
            let (loaded, config_problem) = match config.load() {
                Ok(l) => (l, None),
                Err(e)
                    if e.file().as_deref()
                        == Some(&*config.device_config.display().to_string()) =>
                {
                    let fallback = ConfigArgs {
                        device_config: PathBuf::from(
                            "/nonexistent/attendance-device-config-ignored",
                        ),
                        ..config.clone()
                    };
                    let loaded = fallback
                        .load()
                        .map_err(|e2| anyhow::anyhow!("{e}; and without it: {e2}"))?;
                    let problem =
                        format!("device config ignored, running on the image's config: {e}");
                    (loaded, Some(problem))
                }
                Err(e) => return Err(e.into()),
            };
            logging::init(&loaded.config.log);
            if let Some(p) = &config_problem {
                tracing::error!(problem = %p, "device config unusable");
            }
            let clock: Arc<dyn Clock> = match simulated_clock {
                Some(start) => {
                    Arc::new(SimulatedClock::new(start.with_timezone(&Utc), clock_speed))
                }
                None => Arc::new(SystemClock),
            };
            let opts = RunOptions {
                loaded,
                clock,
                extra_sources: Vec::new(),
                feedback: None,
                on_ready: None,
                config_problem,
            };
            runtime()?.block_on(app::run(opts))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            dir,
            http,
            speed,
            seconds,
        } => run_demo(&dir, &http, speed, seconds),
        Command::CheckConfig { config } => {
            let loaded = config.load()?;
            let secrets = Secrets::load(&loaded.config.secrets_dir())?;
            let mut out = serde_json::to_value(&loaded.config)?;
            // Secrets are files, never config values: show which exist, never their content.
            out["secrets"] = serde_json::json!({
                "directory": loaded.config.secrets_dir(),
                "files": secrets.names().into_iter().map(|n| (n, "<redacted>")).collect::<std::collections::BTreeMap<_, _>>(),
                "qr_keys": format!("{:?}", secrets.qr_keys),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            eprintln!(
                "config ok ({})",
                if loaded.sources.is_empty() {
                    "built-in defaults only".to_string()
                } else {
                    loaded
                        .sources
                        .iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(" < ")
                }
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Students {
            command: StudentsCommand::Import { config, csv },
        } => {
            let loaded = config.load()?;
            let rows = read_students_csv(&csv)?;
            // Through a running daemon the roster goes in chunks: each is one
            // request line well under the socket's limit and one short
            // transaction, so scans never wait behind a whole roster. The
            // file was validated as a whole first.
            let socket = loaded.config.control_socket();
            let mut chunks = rows.chunks(IMPORT_CHUNK);
            let first = chunks.next().unwrap_or(&[]);
            let req = ControlRequest::ImportStudents {
                students: first.to_vec(),
            };
            let summary = match control::request(&socket, &req)? {
                Some(resp) => {
                    let mut total = attendance::store::ImportSummary::default();
                    let mut resp = resp;
                    let mut done = 0usize;
                    let mut next = chunks;
                    loop {
                        if let Some(e) = resp.get("error") {
                            bail!(
                                "daemon refused the import after {done} of {} students: {e}",
                                rows.len()
                            );
                        }
                        let part: attendance::store::ImportSummary =
                            serde_json::from_value(resp["imported"].clone())?;
                        total.inserted += part.inserted;
                        total.updated += part.updated;
                        done += part.inserted + part.updated;
                        let Some(chunk) = next.next() else { break };
                        let req = ControlRequest::ImportStudents {
                            students: chunk.to_vec(),
                        };
                        resp = control::request(&socket, &req)?
                            .context("the daemon stopped during the import")?;
                    }
                    serde_json::to_value(total)?
                }
                None => {
                    // No daemon: take the lock ourselves so none starts meanwhile.
                    let (_lock, mut store) = app::open_store_exclusive(&loaded)?;
                    serde_json::to_value(store.import_students(&rows)?)?
                }
            };
            println!(
                "imported {} students from {}: {summary}",
                rows.len(),
                csv.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Students {
            command: StudentsCommand::List { config },
        } => {
            let loaded = config.load()?;
            let store = ReadOnlyStore::open(&loaded.config.db_path())?;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "{:<20} {:<32} {:<6} {:<8} active",
                "student_number", "full_name", "grade", "section"
            )?;
            for s in store.students()? {
                writeln!(
                    out,
                    "{:<20} {:<32} {:<6} {:<8} {}",
                    s.student_number, s.full_name, s.grade, s.section, s.active
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            config,
            from,
            to,
            output,
        } => {
            if from > to {
                bail!("--from {from} is after --to {to}");
            }
            let loaded = config.load()?;
            let store = ReadOnlyStore::open(&loaded.config.db_path())?;
            let records = store.records_between(from, to)?;
            let sink: Box<dyn Write> = match &output {
                Some(p) => Box::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("creating {}", p.display()))?,
                ),
                None => Box::new(std::io::stdout().lock()),
            };
            let mut w = csv::Writer::from_writer(sink);
            for r in &records {
                w.serialize(r)?;
            }
            w.flush()?;
            eprintln!("exported {} records", records.len());
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan { config, payload } => {
            let loaded = config.load()?;
            let socket = loaded.config.control_socket();
            match control::request(&socket, &ControlRequest::Scan { payload })? {
                Some(resp) => {
                    println!("{resp}");
                    let ok = resp
                        .get("outcome")
                        .and_then(|o| o.as_str())
                        .is_some_and(|o| o != "rejected");
                    Ok(if ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(2)
                    })
                }
                None => bail!(
                    "no daemon is running on {} (control socket {})",
                    loaded.config.data_dir.display(),
                    socket.display()
                ),
            }
        }
        Command::Health { url, wait } => health(&url, Duration::from_secs(wait)),
        Command::Sync {
            command: SyncCommand::Quarantine { command },
        } => {
            let (config, req) = match command {
                QuarantineCommand::List { config, limit } => {
                    (config, ControlRequest::QuarantineList { limit })
                }
                QuarantineCommand::Retry { config, all, seqs } => (
                    config,
                    ControlRequest::QuarantineRetry {
                        seqs: (!all).then_some(seqs),
                    },
                ),
                QuarantineCommand::Discard { config, all, seqs } => (
                    config,
                    ControlRequest::QuarantineDiscard {
                        seqs: (!all).then_some(seqs),
                    },
                ),
            };
            let loaded = config.load()?;
            let resp = match control::request(&loaded.config.control_socket(), &req)? {
                Some(resp) => resp,
                None => {
                    // No daemon: take the lock ourselves so none starts meanwhile.
                    let (_lock, mut store) = app::open_store_exclusive(&loaded)?;
                    control::quarantine_op(&mut store, &req)?
                }
            };
            if let Some(e) = resp.get("error") {
                bail!("{e}");
            }
            println!("{}", serde_json::to_string_pretty(&resp)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Cards {
            command: CardsCommand::Keygen { key_id, out },
        } => {
            let files = attendance::cards::keygen(&key_id, &out)?;
            eprintln!(
                "wrote {} (private: keep it at the office, never on a kiosk) and {} (public: copy it to each kiosk's secrets/qr-keys/)",
                files.secret.display(),
                files.public.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Cards {
            command:
                CardsCommand::Sign {
                    key: Some(key),
                    key_id,
                    students,
                    ..
                },
        } => {
            let key = attendance::cards::load_signing_key(&key)?;
            for s in students {
                let sn =
                    StudentNumber::parse(&s).with_context(|| format!("student number {s:?}"))?;
                println!(
                    "{}",
                    payload::sign_ed25519(&key_id, &key, &sn).map_err(anyhow::Error::msg)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Ota { command } => ota(command),
        Command::Cards {
            command:
                CardsCommand::Sign {
                    config,
                    key_id,
                    key: None,
                    students,
                },
        } => {
            let loaded = config.load()?;
            let key_path = loaded
                .config
                .secrets_dir()
                .join("qr-keys")
                .join(format!("{key_id}.key"));
            let text = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            let key = hex::decode(text.trim())
                .with_context(|| format!("{} must hold a hex key", key_path.display()))?;
            for s in students {
                let sn =
                    StudentNumber::parse(&s).with_context(|| format!("student number {s:?}"))?;
                println!(
                    "{}",
                    payload::sign(&key_id, &key, &sn).map_err(anyhow::Error::msg)?
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn ota(command: OtaCommand) -> anyhow::Result<ExitCode> {
    use attendance::ota;
    match command {
        OtaCommand::Run { config } => {
            // The agent must run when the device layer is broken (that is
            // when an update may be needed): fall back to the image's layer.
            let loaded = match config.load() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("warning: {e}; trying without the device config");
                    ConfigArgs {
                        device_config: PathBuf::from(
                            "/nonexistent/attendance-device-config-ignored",
                        ),
                        ..config.clone()
                    }
                    .load()?
                }
            };
            logging::init(&loaded.config.log);
            if !loaded.config.ota.enabled {
                // attendance-ota.service: exit status 3 is final, no restarts.
                eprintln!("ota is not enabled (ota.enabled is false); nothing to do");
                return Ok(ExitCode::from(3));
            }
            // One thread: the agent is small and its adapters are not Send.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, ota::system::run(loaded.config, loaded.schedule))?;
            Ok(ExitCode::SUCCESS)
        }
        OtaCommand::Status { config } => {
            let loaded = config.load()?;
            let file = ota::state::StateFile::new(&ota::system::ota_dir(&loaded.config));
            let state = file.load()?;
            println!("{}", serde_json::to_string_pretty(&state)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Reads and validates a whole roster file; any bad row rejects the file, so
/// an import never half-applies.
fn read_students_csv(path: &Path) -> anyhow::Result<Vec<StudentRow>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, rec) in reader.deserialize::<StudentRow>().enumerate() {
        let line = i + 2;
        let row = rec.with_context(|| format!("{} line {line}", path.display()))?;
        if !seen.insert(row.student_number.clone()) {
            bail!(
                "{} line {line}: student {} appears twice",
                path.display(),
                row.student_number
            );
        }
        rows.push(row);
    }
    if rows.is_empty() {
        bail!("{}: no students found", path.display());
    }
    Ok(rows)
}

/// Asks the daemon's `/health` with a real HTTP client (reqwest), retrying
/// every 500 ms until `wait` has passed. Exit 0 only on a 200.
fn health(url: &str, wait: Duration) -> anyhow::Result<ExitCode> {
    let url = format!("{}/health", url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .context("HTTP client")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let deadline = Instant::now() + wait;
    rt.block_on(async {
        loop {
            let attempt = async {
                let resp = client.get(&url).send().await?;
                let code = resp.status().as_u16();
                let body = resp.text().await?;
                Ok::<_, reqwest::Error>((code, body))
            }
            .await;
            match attempt {
                Ok((200, body)) => {
                    println!("{body}");
                    return Ok(ExitCode::SUCCESS);
                }
                Ok((code, body)) if Instant::now() >= deadline => {
                    println!("{body}");
                    eprintln!("unhealthy: HTTP {code}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(e) if Instant::now() >= deadline => {
                    eprintln!("unreachable: {}", e.without_url());
                    return Ok(ExitCode::FAILURE);
                }
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    })
}

fn run_demo(dir: &Path, http: &str, speed: u32, seconds: Option<u64>) -> anyhow::Result<ExitCode> {
    let device_config = demo::prepare(dir, http)?;
    let paths = ConfigPaths {
        system: PathBuf::from("/nonexistent/attendance-demo"),
        device: device_config.clone(),
    };
    let loaded = config::load(&paths, None)?;
    logging::init(&loaded.config.log);
    let data_dir = loaded.config.data_dir.clone();
    // Seed the roster before the daemon starts (nothing else holds the lock yet).
    {
        let (_lock, mut store) = app::open_store_exclusive(&loaded)?;
        store.import_students(&demo::roster())?;
    }
    let key = demo::read_demo_key(&data_dir)?;
    let clock = SimulatedClock::new(demo::morning_start(&loaded.schedule), speed);
    let script = demo::script(speed, &key)?;
    let source = ReplaySource::timed(script, false);
    let device_config_shown = device_config.display().to_string();
    let data_shown = data_dir.display().to_string();
    let opts = RunOptions {
        loaded,
        clock: Arc::new(clock),
        extra_sources: vec![Box::new(source)],
        feedback: None,
        config_problem: None,
        on_ready: Some(Box::new(move |addr| {
            let url = addr
                .map(|a| format!("http://{a}/health"))
                .unwrap_or_else(|| "(http disabled)".into());
            println!("Demo kiosk running: a school morning from 06:50 at {speed}x speed.");
            println!("  health:  {url}");
            println!("  config:  {device_config_shown}");
            println!("  data:    {data_shown}");
            println!("Watch the scan_recorded / scan_rejected events below; Ctrl-C stops.");
        })),
    };
    let rt = runtime()?;
    rt.block_on(async move {
        match seconds {
            Some(s) => {
                let mut run = tokio::spawn(app::run(opts));
                tokio::select! {
                    r = &mut run => return r?,
                    _ = tokio::time::sleep(Duration::from_secs(s)) => {}
                }
                // The same ordered shutdown as on Ctrl-C.
                // SAFETY: raising SIGINT in our own process, whose handler is installed.
                unsafe { libc::raise(libc::SIGINT) };
                run.await?
            }
            None => app::run(opts).await,
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

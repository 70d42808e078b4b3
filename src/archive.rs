//! `imgate archive`: the compliance officer's tools over a tenant's archive in S3 or a local
//! directory: list, verify, search, show, export and legal hold.
//!
//! Exit codes: 0 success, 1 `verify` found a problem or nothing matched a hold, 2 the command
//! could not run (store unreachable, bad arguments), 141 the reader of its output stopped
//! reading (as a process ended by SIGPIPE).

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use imgate_dataplane::archive::export::{conversation_days, eml, file_stem, rsmf, transcript_line};
use imgate_dataplane::archive::read::{Query, manifests, search};
use imgate_dataplane::archive::segment::Layout;
use imgate_dataplane::archive::store::{LocalStore, S3Config, S3Store};
use imgate_dataplane::archive::verify::verify;
use imgate_dataplane::archive::{Record, Store};
use indicatif::{ProgressBar, ProgressStyle};

/// Standard output closed by its reader (`| head`): the command ends quietly, with the status
/// of a process ended by SIGPIPE, as Unix tools do (see `main`).
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed by its reader")]
pub struct StdoutClosed;

/// Writes a line to standard output, returning the error: [`StdoutClosed`] when the reader
/// stopped reading, instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(|error| {
            if error.kind() == std::io::ErrorKind::BrokenPipe {
                anyhow::Error::new(StdoutClosed)
            } else {
                anyhow::Error::new(error)
            }
        })?
    };
}

/// Where the archive is.
#[derive(Args)]
pub struct StoreArgs {
    /// The tenant whose archive to read.
    #[arg(long, env = "IMGATE_TENANT", global = true)]
    tenant: Option<String>,
    /// A local archive directory (the embedded default's store).
    #[arg(
        long,
        env = "IMGATE_ARCHIVE_DIR",
        global = true,
        conflicts_with = "s3_bucket"
    )]
    dir: Option<PathBuf>,
    /// The tenant's S3 bucket; credentials come from the usual AWS sources.
    #[arg(long, env = "IMGATE_S3_BUCKET", global = true)]
    s3_bucket: Option<String>,
    /// The bucket's region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1", global = true)]
    s3_region: String,
    /// Endpoint of an S3-compatible store.
    #[arg(long, env = "IMGATE_S3_ENDPOINT", global = true)]
    s3_endpoint: Option<String>,
    /// Key prefix inside the bucket.
    #[arg(long, default_value = "", global = true)]
    prefix: String,
}

/// Filters shared by search, export and hold.
#[derive(Args, Clone, Default)]
pub struct Filters {
    /// Messages sent by this person.
    #[arg(long)]
    person: Option<String>,
    /// Messages from or to this handle.
    #[arg(long)]
    handle: Option<String>,
    /// Messages in this room.
    #[arg(long)]
    room: Option<String>,
    /// From this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    from: Option<DateTime<Utc>>,
    /// Up to this time (RFC 3339).
    #[arg(long)]
    to: Option<DateTime<Utc>>,
    /// Messages containing this text (case-insensitive).
    #[arg(long)]
    text: Option<String>,
    /// Messages a rule matched (`policy/rule`, or a policy name).
    #[arg(long)]
    rule: Option<String>,
    /// One conversation.
    #[arg(long)]
    conversation: Option<String>,
}

impl From<Filters> for Query {
    fn from(f: Filters) -> Self {
        Query {
            from: f.from,
            to: f.to,
            person: f.person,
            handle: f.handle,
            room: f.room,
            text: f.text,
            rule: f.rule,
            conversation: f.conversation,
        }
    }
}

/// Export formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// One e-mail per conversation-day (Global Relay, Proofpoint and other archives ingest it).
    Eml,
    /// Relativity Short Message Format 2.0, one file per conversation-day (eDiscovery).
    Rsmf,
    /// The records as JSON lines.
    Jsonl,
}

/// The archive subcommands.
#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// List every segment with its time range and record count.
    Ls,
    /// Walk every chain and report any missing, altered or reordered segment.
    Verify,
    /// Find records.
    Search {
        #[command(flatten)]
        filters: Filters,
        /// Print records as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Replay one conversation as a readable transcript.
    Show {
        /// The conversation id.
        conversation: String,
        /// From this time (RFC 3339).
        #[arg(long)]
        from: Option<DateTime<Utc>>,
        /// Up to this time (RFC 3339).
        #[arg(long)]
        to: Option<DateTime<Utc>>,
    },
    /// Export records for a regulator or another archive.
    Export {
        /// eml, rsmf or jsonl.
        #[arg(long, value_enum)]
        format: Format,
        /// Folder to write into (created if needed).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        filters: Filters,
    },
    /// Place or lift a legal hold on every segment holding matching records.
    Hold {
        /// set or clear.
        #[arg(value_parser = ["set", "clear"])]
        action: String,
        #[command(flatten)]
        filters: Filters,
    },
}

fn bar(label: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} segments")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(label);
    bar
}

impl StoreArgs {
    async fn open(&self) -> anyhow::Result<(Store, String)> {
        let tenant = self
            .tenant
            .clone()
            .context("name the tenant with --tenant (or IMGATE_TENANT)")?;
        let store = match (&self.dir, &self.s3_bucket) {
            (Some(dir), _) => Store::Local(LocalStore::new(dir)),
            (None, Some(bucket)) => Store::S3(
                S3Store::connect(&S3Config {
                    bucket: bucket.clone(),
                    region: self.s3_region.clone(),
                    endpoint: self.s3_endpoint.clone(),
                    credentials: None,
                    timeout: None,
                })
                .await,
            ),
            (None, None) => anyhow::bail!(
                "say where the archive is: --dir DIR for a local archive, or --s3-bucket BUCKET"
            ),
        };
        Ok((store, tenant))
    }
}

/// Runs an archive subcommand.
pub fn run(store: &StoreArgs, command: ArchiveCommand) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let (archive, tenant) = store.open().await?;
        let prefix = Layout::prefix(&store.prefix);
        let prefix = prefix.as_str();
        match command {
            ArchiveCommand::Ls => ls(&archive, prefix, &tenant).await,
            ArchiveCommand::Verify => verify_command(&archive, prefix, &tenant).await,
            ArchiveCommand::Search { filters, json } => {
                let records = find(&archive, prefix, &tenant, filters.into()).await?;
                for record in &records {
                    if json {
                        out!("{}", String::from_utf8_lossy(&record.to_json()));
                    } else if let Some(line) = transcript_line(record) {
                        out!("{}  {line}", record.conv);
                    }
                }
                eprintln!("{} record(s) found", records.len());
                Ok(0)
            }
            ArchiveCommand::Show {
                conversation,
                from,
                to,
            } => {
                let query = Query {
                    conversation: Some(conversation.clone()),
                    from,
                    to,
                    ..Query::default()
                };
                let records = find(&archive, prefix, &tenant, query).await?;
                if records.is_empty() {
                    anyhow::bail!(
                        "no records of conversation {conversation:?} for tenant {tenant}"
                    );
                }
                out!("Conversation {conversation} ({} records)", records.len());
                for line in records.iter().filter_map(transcript_line) {
                    out!("{line}");
                }
                Ok(0)
            }
            ArchiveCommand::Export {
                format,
                out,
                filters,
            } => export(&archive, prefix, &tenant, format, &out, filters.into()).await,
            ArchiveCommand::Hold { action, filters } => {
                hold(&archive, prefix, &tenant, action == "set", filters.into()).await
            }
        }
    })
}

async fn find(
    archive: &Store,
    prefix: &str,
    tenant: &str,
    query: Query,
) -> anyhow::Result<Vec<Record>> {
    let progress = bar("reading");
    let records = search(archive, prefix, tenant, &query, &mut |done, total| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
    })
    .await?;
    progress.finish_and_clear();
    Ok(records)
}

async fn ls(archive: &Store, prefix: &str, tenant: &str) -> anyhow::Result<i32> {
    let all = manifests(archive, prefix, tenant).await?;
    for m in &all {
        out!(
            "{}  {} .. {}  {:>7} records  {:>9} bytes  {}",
            m.writer,
            m.first_ts.format("%Y-%m-%d %H:%M:%S"),
            m.last_ts.format("%H:%M:%S"),
            m.records,
            m.bytes,
            m.key
        );
    }
    let records: u64 = all.iter().map(|m| m.records).sum();
    out!(
        "{} segment(s), {records} record(s) in {}",
        all.len(),
        archive.describe()
    );
    Ok(0)
}

async fn verify_command(archive: &Store, prefix: &str, tenant: &str) -> anyhow::Result<i32> {
    let progress = bar("verifying");
    let report = verify(archive, prefix, tenant, &mut |done, total| {
        progress.set_length(total as u64);
        progress.set_position(done as u64);
    })
    .await?;
    progress.finish_and_clear();
    for problem in &report.problems {
        out!("PROBLEM  {problem}");
    }
    for gap in &report.gaps {
        out!("GAP      {gap}");
    }
    let verdict = if report.is_intact() {
        "intact"
    } else {
        "NOT intact"
    };
    out!(
        "{verdict}: {} writer(s), {} segment(s), {} record(s) checked in {}; {} problem(s), {} recorded gap(s)",
        report.writers,
        report.segments,
        report.records,
        archive.describe(),
        report.problems.len(),
        report.gaps.len()
    );
    Ok(i32::from(!report.is_intact()))
}

async fn export(
    archive: &Store,
    prefix: &str,
    tenant: &str,
    format: Format,
    out: &std::path::Path,
    query: Query,
) -> anyhow::Result<i32> {
    let records = find(archive, prefix, tenant, query).await?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut files = 0;
    match format {
        Format::Jsonl => {
            let mut lines = Vec::new();
            for record in &records {
                lines.extend_from_slice(&record.to_json());
                lines.push(b'\n');
            }
            let path = out.join(format!("{tenant}.jsonl"));
            std::fs::write(&path, lines)
                .with_context(|| format!("cannot write {}", path.display()))?;
            files += 1;
        }
        Format::Eml | Format::Rsmf => {
            for ((conversation, day), group) in conversation_days(&records) {
                let (bytes, extension) = match format {
                    Format::Eml => (eml(&group, &conversation, &day, tenant), "eml"),
                    _ => (rsmf(&group, &conversation, &day, tenant), "rsmf"),
                };
                let path = out.join(format!("{}.{extension}", file_stem(&conversation, &day)));
                std::fs::write(&path, bytes)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                files += 1;
            }
        }
    }
    out!(
        "exported {} record(s) into {files} file(s) in {}",
        records.len(),
        out.display()
    );
    Ok(0)
}

async fn hold(
    archive: &Store,
    prefix: &str,
    tenant: &str,
    on: bool,
    query: Query,
) -> anyhow::Result<i32> {
    let all = manifests(archive, prefix, tenant).await?;
    let mut held = 0;
    for manifest in &all {
        let single = Query {
            from: Some(manifest.first_ts),
            to: Some(manifest.last_ts),
            ..query.clone()
        };
        let body = archive.get(&manifest.key).await?;
        let records = imgate_dataplane::archive::segment::open_segment(&body)
            .map_err(|e| anyhow::anyhow!("{}: {e}", manifest.key))?;
        if records.iter().any(|r| single.matches(r)) {
            archive.set_legal_hold(&manifest.key, on).await?;
            archive
                .set_legal_hold(
                    &Layout {
                        prefix: prefix.to_owned(),
                        tenant: tenant.to_owned(),
                        writer: manifest.writer.clone(),
                    }
                    .manifest_key(manifest.first_seq),
                    on,
                )
                .await?;
            held += 1;
        }
    }
    let verb = if on { "placed on" } else { "lifted from" };
    out!(
        "legal hold {verb} {held} segment(s) and their manifests in {}",
        archive.describe()
    );
    Ok(i32::from(held == 0))
}

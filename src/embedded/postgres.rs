//! A private PostgreSQL cluster run from the PostgreSQL binaries installed on the machine.
//!
//! Layout of the cluster root: `data/` is the data directory (PGDATA), `postgres.log` the server
//! log, `superuser-password` the password of role `postgres` (required over TCP, so other local
//! users cannot simply connect as superuser), `start.lock` serialises starts between processes.
//! The server listens on 127.0.0.1 only; its unix socket (mode 0700) lives in `data/`, or in
//! `/tmp` when that path is too long for a socket.
//!
//! PostgreSQL refuses to run as root. When this process is root, `initdb`, `postgres` and
//! `pg_ctl` run as the `postgres` user (else `nobody`) and the cluster root is owned by it.
//! That user must be able to traverse every parent of the cluster root; when it cannot (a
//! project under `/root`, mode 0700), the cluster root moves to
//! `/var/lib/autos/postgres-<hash of the path>` and `<dir>/data` becomes a symlink to its data
//! directory. Loosening the permissions of `/root` instead would expose root's files.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::distr::{Alphanumeric, SampleString as _};
use sha2::Digest as _;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgSslMode};
use sqlx::{ConnectOptions as _, Connection as _};
use tokio::process::{Child, Command};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
const SUPERUSER: &str = "postgres";
const DATABASE: &str = "autos";
const BINARIES: [&str; 3] = ["initdb", "postgres", "pg_ctl"];
/// Install locations named after a version: `parent/<prefix><version>/bin`.
const VERSIONED_INSTALLS: [(&str, &str); 4] = [
    ("/usr/lib/postgresql", ""), // Debian, Ubuntu
    ("/usr", "pgsql-"),          // PGDG RPMs
    ("/opt/homebrew/opt", "postgresql@"),
    ("/usr/local/opt", "postgresql@"),
];
/// Install locations not named after a version.
const FALLBACK_PATH: &str = "/usr/local/pgsql/bin:/opt/homebrew/bin:/usr/local/bin";
const INITDB_ARGS: &str = "-U postgres -E UTF8 --locale=C --auth-local=trust \
                           --auth-host=scram-sha-256 --pwfile=superuser-password";
const INSTALL_HINT: &str = "Install PostgreSQL (Debian/Ubuntu: `sudo apt-get install postgresql`; \
                            macOS: `brew install postgresql@16`) or set DATABASE_URL";

/// A private PostgreSQL cluster, started by this process or shared with another one.
///
/// Dropping it leaves the server running (the next start reuses it); [`EmbeddedPostgres::stop`]
/// shuts it down.
pub struct EmbeddedPostgres {
    url: String,
    /// The server and the `pg_ctl stop` that ends it, when this process started it.
    owned: Option<(Child, Command)>,
}

impl EmbeddedPostgres {
    /// Starts (or reuses) a private cluster rooted at `dir` (see the module docs for the
    /// layout), returns once it accepts connections and database `autos` exists.
    pub async fn start(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir.canonicalize()?;
        let root = fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        let run_as = root.then(unprivileged_user).transpose()?;
        let base = cluster_root(&dir, run_as.as_ref())?;
        let _lock = lock(&base.join("start.lock")).await?;
        let password = superuser_password(&base.join("superuser-password"))?;
        if let Some(user) = &run_as {
            give_to(&base, user)?;
        }
        let data = base.join("data");
        let bin = find_binaries(&data)?;
        let cluster = Cluster {
            bin,
            base,
            data,
            run_as,
            password,
        };

        let mut owned = None;
        let port = match cluster.running_port().await? {
            Some(port) => port,
            None => {
                if !cluster.data.join("PG_VERSION").exists() {
                    let mut initdb = cluster.command("initdb");
                    initdb.arg("-D").arg(&cluster.data);
                    initdb.args(INITDB_ARGS.split_whitespace());
                    run(&mut initdb, "initdb").await?;
                }
                let (port, child) = cluster.launch().await?;
                let mut pg_ctl = cluster.command("pg_ctl");
                pg_ctl.arg("stop").arg("-D").arg(&cluster.data);
                pg_ctl.args(["-m", "fast", "-w", "-t", "60"]);
                owned = Some((child, pg_ctl));
                port
            }
        };
        cluster.ensure_database(port).await?;
        let data = cluster.data.display();
        tracing::info!(port, %data, started = owned.is_some(), "embedded PostgreSQL ready");
        let password = &cluster.password;
        let url = format!("postgres://{SUPERUSER}:{password}@127.0.0.1:{port}/{DATABASE}");
        Ok(Self { url, owned })
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/autos`
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fast shutdown (open sessions are ended), only if this process started the cluster.
    pub async fn stop(self) -> Result<()> {
        let Some((mut child, mut pg_ctl)) = self.owned else {
            return Ok(());
        };
        run(&mut pg_ctl, "pg_ctl stop").await?;
        child.wait().await?;
        Ok(())
    }
}

/// Leaves out the URL: it holds the superuser password.
impl std::fmt::Debug for EmbeddedPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let started_here = self.owned.is_some();
        let mut debug = f.debug_struct("EmbeddedPostgres");
        debug
            .field("started_here", &started_here)
            .finish_non_exhaustive()
    }
}

/// The unprivileged account PostgreSQL runs as when this process is root.
#[derive(Debug)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

fn unprivileged_user() -> Result<RunAs> {
    let passwd = fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    let find = |wanted: &str| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (uid, gid) = (fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?);
            let name = wanted.to_owned();
            (fields[0] == wanted).then_some(RunAs { name, uid, gid })
        })
    };
    let found = find("postgres").or_else(|| find("nobody"));
    found.context("PostgreSQL cannot run as root, and there is no `postgres` nor `nobody` user")
}

/// `dir` itself, unless `user` cannot reach it (see the module docs).
fn cluster_root(dir: &Path, user: Option<&RunAs>) -> Result<PathBuf> {
    let Some(user) = user.filter(|user| !reachable(dir, user)) else {
        return Ok(dir.to_owned());
    };
    let hash = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let parent = Path::new("/var/lib/autos");
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    fs::set_permissions(parent, fs::Permissions::from_mode(0o755))?;
    let base = parent.join(format!("postgres-{}", hex::encode(&hash[..8])));
    fs::create_dir_all(&base)?;
    if !reachable(&base, user) {
        bail!("user `{}` cannot reach {}", user.name, base.display());
    }
    let link = dir.join("data");
    if link.symlink_metadata().is_err() {
        std::os::unix::fs::symlink(base.join("data"), &link)?;
    }
    let (name, shown_base) = (&user.name, base.display());
    let dir = dir.display();
    tracing::warn!("user `{name}` cannot reach {dir}: the cluster lives in {shown_base}");
    Ok(base)
}

/// Whether `user` may traverse every parent of `path` (supplementary groups are ignored).
fn reachable(path: &Path, user: &RunAs) -> bool {
    path.ancestors().skip(1).all(|dir| {
        fs::metadata(dir).is_ok_and(|m| {
            let mode = m.mode();
            let as_owner = m.uid() == user.uid && mode & 0o100 != 0;
            mode & 0o001 != 0 || as_owner || (m.gid() == user.gid && mode & 0o010 != 0)
        })
    })
}

/// Hands the cluster to `user`: PostgreSQL insists on owning its data directory. Only our
/// own files change hands, whatever `dir` the caller passed.
fn give_to(base: &Path, user: &RunAs) -> Result<()> {
    for path in [base, &base.join("superuser-password")] {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))?;
    }
    let data = base.join("data");
    if fs::metadata(&data).is_ok_and(|m| m.uid() != user.uid) {
        let owner = format!("{}:{}", user.uid, user.gid);
        let mut chown = StdCommand::new("chown");
        let status = chown.args(["-R", &owner]).arg(&data).status();
        if !status.context("running chown")?.success() {
            bail!("chown -R {} {} failed", user.name, data.display());
        }
    }
    Ok(())
}

/// Held while starting, so that concurrent `autos` processes start one server, not two. The
/// holder's own timeouts bound the wait.
async fn lock(path: &Path) -> Result<fs::File> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await?;
    locked.with_context(|| format!("locking {}", path.display()))
}

fn superuser_password(path: &Path) -> Result<String> {
    if let Ok(text) = fs::read_to_string(path) {
        return Ok(text.trim().to_owned());
    }
    let password = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true).mode(0o600);
    let mut file = options
        .open(path)
        .context("creating the superuser password file")?;
    std::io::Write::write_all(&mut file, password.as_bytes())?;
    Ok(password)
}

/// The first directory holding `initdb`, `postgres` and `pg_ctl`, searching `PATH`, then the
/// usual install locations, newest version first. A cluster only runs under the major version
/// that created it, so for an existing one an install of that version comes first.
fn find_binaries(data: &Path) -> Result<PathBuf> {
    let made_by = fs::read_to_string(data.join("PG_VERSION")).ok();
    let made_by: Option<u32> = made_by.and_then(|v| v.trim().parse().ok());
    let mut installs: Vec<(u32, PathBuf)> = Vec::new();
    for (parent, prefix) in VERSIONED_INSTALLS {
        for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
            let name = entry.file_name().into_string().unwrap_or_default();
            let major = name.strip_prefix(prefix).and_then(|v| v.split('.').next());
            if let Some(major) = major.and_then(|m| m.parse().ok()) {
                installs.push((major, entry.path().join("bin")));
            }
        }
    }
    installs.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    let (fitting, others): (Vec<_>, Vec<_>) =
        installs.into_iter().partition(|i| Some(i.0) == made_by);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = fitting.into_iter().map(|(_, dir)| dir).collect::<Vec<_>>();
    dirs.extend(std::env::split_paths(&path).chain(std::env::split_paths(FALLBACK_PATH)));
    dirs.extend(others.into_iter().map(|(_, dir)| dir));
    let found = dirs
        .into_iter()
        .find(|d| BINARIES.iter().all(|b| d.join(b).is_file()));
    found.with_context(|| format!("initdb, postgres and pg_ctl not found. {INSTALL_HINT}"))
}

async fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().await;
    let out = out.with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        bail!("{what} failed ({}): {}", out.status, stderr.trim());
    }
    Ok(())
}

/// Whether `pid` is a PostgreSQL process.
fn is_postgres(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.starts_with("postgres"),
        Err(_) if Path::new("/proc/self").exists() => false,
        Err(_) => {
            let ps = StdCommand::new("ps")
                .args(["-o", "comm=", "-p", &pid.to_string()])
                .output();
            ps.is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("postgres"))
        }
    }
}

/// Where the cluster lives and how to run its programs.
struct Cluster {
    bin: PathBuf,
    base: PathBuf,
    data: PathBuf,
    run_as: Option<RunAs>,
    password: String,
}

impl Cluster {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        // The unprivileged user may not be able to enter our working directory.
        cmd.current_dir(&self.base).stdin(Stdio::null());
        if let Some(user) = &self.run_as {
            cmd.uid(user.uid).gid(user.gid);
        }
        cmd
    }

    /// The port of a server already running on our data, waiting for one still starting up.
    /// A `postmaster.pid` whose process is gone or is not PostgreSQL (after a crash or a
    /// reboot the pid may belong to anything) is removed, since it would stop a new server.
    async fn running_port(&self) -> Result<Option<u16>> {
        let pid_file = self.data.join("postmaster.pid");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let Ok(text) = fs::read_to_string(&pid_file) else {
                return Ok(None);
            };
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            let pid: u32 = lines.first().and_then(|l| l.parse().ok()).unwrap_or(0);
            // The server on that port is ours if it runs on our data directory. (Our random
            // password alone proves nothing: a server with trust authentication, such as a
            // development machine's own PostgreSQL, accepts any.)
            if let Some(port) = lines.get(3).and_then(|l| l.parse().ok()) {
                if let Ok(mut conn) = self.connect(port, "postgres").await {
                    let ours = self.serves_our_data(&mut conn).await;
                    let _ = conn.close().await;
                    if ours {
                        return Ok(Some(port));
                    }
                }
            }
            if !is_postgres(pid) {
                tracing::info!(pid, "removing a stale postmaster.pid");
                fs::remove_file(&pid_file)?;
                return Ok(None);
            }
            if Instant::now() > deadline {
                let data = self.data.display();
                bail!("PostgreSQL (pid {pid}) runs on {data} but refuses our connections");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Whether the server behind `conn` runs on this cluster's data directory.
    async fn serves_our_data(&self, conn: &mut PgConnection) -> bool {
        let query = sqlx::query_scalar("SELECT current_setting('data_directory')");
        let Ok(theirs) = query.fetch_one(&mut *conn).await else {
            return false;
        };
        let theirs: String = theirs;
        match (fs::canonicalize(&theirs), fs::canonicalize(&self.data)) {
            (Ok(theirs), Ok(ours)) => theirs == ours,
            _ => false,
        }
    }

    async fn launch(&self) -> Result<(u16, Child)> {
        let log_path = self.base.join("postgres.log");
        // Socket paths are limited to 107 bytes; ',' and '"' mean something in this setting.
        let socket_dir = match self.data.to_str() {
            Some(s) if s.len() < 108 - "/.s.PGSQL.65535".len() && !s.contains([',', '"']) => s,
            _ => "/tmp",
        };
        let mut log_options = fs::File::options();
        log_options.create(true).append(true);
        let mut attempt = 0;
        loop {
            attempt += 1;
            // Something else may take the port before the server binds it: hence the retries.
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let log = log_options.open(&log_path)?;
            let log_start = usize::try_from(log.metadata()?.len())?;
            let mut server = self.command("postgres");
            server.arg("-D").arg(&self.data);
            server.arg("-p").arg(port.to_string());
            server.args(["-h", "127.0.0.1", "-k", socket_dir]);
            server.args(["-c", "unix_socket_permissions=0700"]);
            // Its own process group: Ctrl-C on autos must not hit the server as well.
            server.stdout(log.try_clone()?).stderr(log).process_group(0);
            let mut child = server.spawn().context("starting postgres")?;
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            let status = loop {
                if let Some(status) = child.try_wait()? {
                    break status;
                }
                if let Ok(conn) = self.connect(port, "postgres").await {
                    let _ = conn.close().await;
                    return Ok((port, child));
                }
                if Instant::now() > deadline {
                    let path = log_path.display();
                    bail!("PostgreSQL is not ready after {STARTUP_TIMEOUT:?}; see {path}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            let log = fs::read(&log_path).unwrap_or_default();
            let log = String::from_utf8_lossy(log.get(log_start..).unwrap_or_default());
            if !log.contains("already in use") || attempt == 3 {
                let path = log_path.display();
                bail!(
                    "PostgreSQL exited at startup ({status}); {path}:\n{}",
                    log.trim()
                );
            }
        }
    }

    async fn connect(&self, port: u16, database: &str) -> Result<PgConnection> {
        let options = PgConnectOptions::new().host("127.0.0.1").port(port);
        let options = options.username(SUPERUSER).password(&self.password);
        let options = options.database(database).ssl_mode(PgSslMode::Disable);
        let options = options.disable_statement_logging();
        let connecting = PgConnection::connect_with(&options);
        Ok(tokio::time::timeout(Duration::from_secs(3), connecting).await??)
    }

    /// Runs under the start lock, so no other `autos` process creates the database meanwhile.
    async fn ensure_database(&self, port: u16) -> Result<()> {
        let mut conn = self.connect(port, "postgres").await?;
        let query = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1");
        let exists: Option<i32> = query.bind(DATABASE).fetch_optional(&mut conn).await?;
        if exists.is_none() {
            let create = sqlx::query("CREATE DATABASE autos");
            create.execute(&mut conn).await?;
        }
        conn.close().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn select_one(url: &str) -> i32 {
        let mut conn = PgConnection::connect(url).await.unwrap();
        let query = sqlx::query_scalar("SELECT 1");
        query.fetch_one(&mut conn).await.unwrap()
    }

    #[tokio::test]
    async fn starts_reuses_and_stops() {
        let tmp = std::env::temp_dir().join(format!("autos-pg-{}", uuid::Uuid::new_v4()));
        let dir = tmp.join("postgres");
        let first = EmbeddedPostgres::start(&dir).await.unwrap();
        assert!(first.url().ends_with("/autos"));
        assert_eq!(select_one(first.url()).await, 1);

        let second = EmbeddedPostgres::start(&dir).await.unwrap();
        assert_eq!(second.url(), first.url());
        second.stop().await.unwrap(); // not its cluster: a no-op
        assert_eq!(select_one(first.url()).await, 1);
        first.stop().await.unwrap();
        assert!(!dir.join("data/postmaster.pid").exists());

        // A crash leaves postmaster.pid behind, and its pid may since belong to anything.
        let stale = format!("{}\n{}\n0\n5432\n", std::process::id(), dir.display());
        fs::write(dir.join("data/postmaster.pid"), stale).unwrap();
        // Its port (5432) may even be another server's that accepts anyone (trust
        // authentication, as on this kind of machine): that one is not taken for ours.
        let third = EmbeddedPostgres::start(&dir).await.unwrap();
        assert_eq!(select_one(third.url()).await, 1);
        let mut conn = PgConnection::connect(third.url()).await.unwrap();
        let served: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            fs::canonicalize(served).unwrap(),
            fs::canonicalize(dir.join("data")).unwrap(),
            "{} is another server",
            third.url()
        );
        conn.close().await.unwrap();
        third.stop().await.unwrap();
        let _ = fs::remove_dir_all(tmp);
    }

    /// As root, a cluster below a directory the `postgres` user cannot enter is moved.
    #[tokio::test]
    async fn relocates_an_unreachable_cluster_when_root() {
        if !fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) {
            return;
        }
        let tmp = std::env::temp_dir().join(format!("autos-pg-private-{}", uuid::Uuid::new_v4()));
        fs::create_dir(&tmp).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).unwrap();
        let dir = tmp.join("postgres");
        let pg = EmbeddedPostgres::start(&dir).await.unwrap();
        assert_eq!(select_one(pg.url()).await, 1);
        let data = fs::read_link(tmp.join("postgres/data")).unwrap();
        assert!(data.starts_with("/var/lib/autos"), "{}", data.display());
        pg.stop().await.unwrap();
        let _ = fs::remove_dir_all(data.parent().unwrap());
        let _ = fs::remove_dir("/var/lib/autos"); // only if no other cluster lives there
        let _ = fs::remove_dir_all(tmp);
    }
}

# Shared set-up for scripts/run and scripts/test: makes sure the tools autos needs are on
# this machine, installing them from the system's package manager when they are not.
# Sourced, not run.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else return 1
  fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ -z "$apt_updated" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || return 1
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || die "Rust is not installed. Install it with rustup (https://rustup.rs), then run this again."
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  # Two dependencies compile C (aws-lc-sys for TLS, libmimalloc-sys for the allocator).
  command -v cc >/dev/null 2>&1 && return 0
  say "installing a C compiler (the build compiles C)"
  apt_install gcc libc6-dev && return 0
  die "the build needs a C compiler (Debian/Ubuntu: sudo apt-get install gcc; macOS: xcode-select --install)."
}

# PostgreSQL's server binaries (initdb, pg_ctl, postgres): the embedded database uses them.
pg_bindir() {
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  for d in /usr/local/pgsql/bin /opt/homebrew/bin /usr/local/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

ensure_postgres_binaries() {
  pg_bindir >/dev/null && return 0
  say "PostgreSQL is not installed; installing it"
  if apt_install postgresql postgresql-contrib; then
    pg_bindir >/dev/null && return 0
  elif command -v brew >/dev/null 2>&1; then
    brew install postgresql@16 && pg_bindir >/dev/null && return 0
  fi
  die "PostgreSQL server binaries are needed (Debian/Ubuntu: sudo apt-get install postgresql; macOS: brew install postgresql@16), or set DATABASE_URL to a server you run."
}

# Headless Chromium for the progress page's browser test (AUTOS_TEST_CHROMIUM points elsewhere).
ensure_chromium() {
  local bin="${AUTOS_TEST_CHROMIUM:-/usr/bin/chromium}"
  [ -x "$bin" ] && return 0
  command -v chromium >/dev/null 2>&1 && { export AUTOS_TEST_CHROMIUM="$(command -v chromium)"; return 0; }
  say "Chromium is not installed; installing it for the browser test"
  apt_install chromium && [ -x /usr/bin/chromium ] && return 0
  die "the browser test needs Chromium (Debian/Ubuntu: sudo apt-get install chromium), or AUTOS_TEST_CHROMIUM pointing at one."
}

# Node.js and the npm packages of the GraphQL over HTTP audit (tests/graphql_http.rs runs
# tests/graphql-http/audit.mjs with graphql-http's serverAudits): `npm ci` from the lock file
# when node_modules is missing or older than package-lock.json.
ensure_node_audit() {
  local dir="${1:-tests/graphql-http}"
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "Node.js is not installed; installing it (nodejs, npm) for the GraphQL over HTTP audit"
    apt_install nodejs npm || true
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
      || die "the GraphQL over HTTP audit needs Node.js 18 or later and npm (Debian/Ubuntu: sudo apt-get install nodejs npm; macOS: brew install node)."
  fi
  local major
  major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  [ "$major" -ge 18 ] 2>/dev/null \
    || die "the GraphQL over HTTP audit needs Node.js 18 or later (it uses fetch); this is $(node --version 2>/dev/null || echo 'an unknown version')."
  # npm writes node_modules/.package-lock.json on every install: it is as new as the install.
  local lock="$dir/package-lock.json" installed="$dir/node_modules/.package-lock.json"
  [ -f "$lock" ] || die "$lock is missing"
  if [ -f "$installed" ] && [ ! "$lock" -nt "$installed" ]; then return 0; fi
  say "installing the GraphQL over HTTP audit's npm packages in $dir (npm ci)"
  (cd "$dir" && npm ci --no-audit --no-fund) \
    || die "npm ci failed in $dir: the audit's packages come from the npm registry (https://registry.npmjs.org); check this machine reaches it, or its npm proxy settings."
}

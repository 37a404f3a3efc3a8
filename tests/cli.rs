//! The `autos` binary: subcommands and start-up checks of its configuration.

use std::process::Command;

fn autos() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_autos"));
    // Nothing from the caller's environment or a .env file may change the outcome.
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(env!("CARGO_TARGET_TMPDIR"));
    cmd
}

#[test]
fn schema_prints_the_checked_in_sdl() {
    let out = autos().arg("schema").output().unwrap();
    assert!(out.status.success());
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), checked_in);
}

#[test]
fn malformed_environment_values_stop_start_up_naming_the_variable() {
    for (name, value) in [
        ("AUTOS_WORKERS", "many"),
        ("AUTOS_BIND", "nowhere"),
        ("AUTOS_MIGRATE", "perhaps"),
        ("AUTOS_PRESIGN_TTL_SECS", "10"),
        ("AUTOS_LOG_FORMAT", "xml"),
        ("AUTOS_LOG", "autos=loud"),
    ] {
        let out = autos().arg("serve").env(name, value).output().unwrap();
        assert!(!out.status.success(), "{name}={value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
    }
}

#[test]
fn flags_are_named_in_their_errors() {
    let out = autos()
        .args(["work", "--batch-size", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--batch-size"));
}

#[test]
fn help_lists_subcommands_and_variables() {
    let out = autos().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for word in [
        "serve",
        "work",
        "migrate",
        "schema",
        "DATABASE_URL",
        "AUTOS_S3_ENDPOINT",
    ] {
        assert!(help.contains(word), "{word} missing from --help:\n{help}");
    }
}

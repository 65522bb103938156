//! Many instances sharing one PostgreSQL database: each test starts a private cluster
//! (tests/e2e/postgres.rs) on loopback.

use std::net::TcpStream;
use std::process::Stdio;

use crate::postgres::Postgres;

/// The fixture itself: a committed row survives a crash of the whole cluster, and the
/// connection count sees a client come and go.
#[tokio::test]
async fn a_private_postgres_starts_stops_and_comes_back() {
    let mut pg = Postgres::start();
    let port = pg.port();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{port}/resumable")
    );
    pg.psql("CREATE TABLE fixture (id integer PRIMARY KEY, note text)");
    pg.psql("INSERT INTO fixture VALUES (1, 'committed')");

    pg.stop();
    assert!(!pg.is_running());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    assert!(pg.try_psql("SELECT 1").is_err());

    pg.start_again();
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql("SELECT note FROM fixture WHERE id = 1"),
        "committed"
    );
    assert_eq!(pg.connections(), 0);

    // A session held open (psql waiting on its stdin) counts, and stops counting once closed.
    let mut session = pg
        .psql_command()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("psql");
    pg.wait_for("the session to count", |pg| match pg.connections() {
        1 => Ok(()),
        n => Err(format!("{n} connections")),
    })
    .await;
    drop(session.stdin.take());
    assert!(session.wait().expect("psql exits").success());
    pg.wait_for("the session to end", |pg| match pg.connections() {
        0 => Ok(()),
        n => Err(format!("{n} connections")),
    })
    .await;

    // The immediate shutdown loses nothing committed either.
    pg.psql("INSERT INTO fixture VALUES (2, 'also committed')");
    pg.stop_immediate();
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    pg.start_again();
    assert_eq!(pg.psql("SELECT count(*) FROM fixture"), "2");
}

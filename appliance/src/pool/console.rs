//! The admin console, PgBouncer's way: `psql -p 6432 -U ADMIN gatehouse`, for the users in
//! `pool.admin_users`. Simple queries only: `SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|QUERIES|
//! HELP`, `PAUSE [db]`, `RESUME [db]` and `RELOAD`.

use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Shared;
use super::client::Conn;
use super::codec::{self, cstr};
use super::views::{self, Table, VIEWS};

/// Type oid of `text`: every column is shown as text, as PgBouncer's console does for psql.
const TEXT_OID: i32 = 25;

pub(crate) async fn serve<S: AsyncRead + AsyncWrite + Unpin + Send>(
    shared: &Arc<Shared>,
    mut conn: Conn<S>,
) {
    loop {
        let message = match conn.next_message().await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(err) => return conn.fatal("08P01", &err.to_string()).await,
        };
        let mut out = BytesMut::new();
        match message[0] {
            b'X' => return,
            b'Q' => {
                let Some((sql, _)) = cstr(&message[5..]) else {
                    return conn.fatal("08P01", "invalid Query message").await;
                };
                run(shared, sql, &mut out).await;
                codec::ready_for_query(&mut out, b'I');
            }
            _ => {
                return conn
                    .fatal("0A000", "the admin console takes simple queries only")
                    .await;
            }
        }
        if conn.stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

async fn run(shared: &Arc<Shared>, sql: &str, out: &mut BytesMut) {
    let words: Vec<String> = sql
        .trim()
        .trim_end_matches(';')
        .split_ascii_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let done = |out: &mut BytesMut, tag: &str| {
        codec::message(out, b'C', |out| codec::put_cstr(out, tag));
    };
    match words.as_slice() {
        ["show", "help"] => {
            let rows = HELP.iter().map(|line| vec![Value::from(*line)]).collect();
            write_table(
                out,
                &Table {
                    columns: &["command"],
                    rows,
                },
            );
            done(out, "SHOW");
        }
        ["show", name] => match views::view(shared, name) {
            Some(table) => {
                write_table(out, &table);
                done(out, "SHOW");
            }
            None => codec::error_response(
                out,
                "ERROR",
                "42601",
                &format!("no view {name}: try one of {}", VIEWS.join(", ")),
            ),
        },
        ["pause", rest @ ..] if rest.len() <= 1 => {
            shared.pause(rest.first().copied()).await;
            done(out, "PAUSE");
        }
        ["resume", rest @ ..] if rest.len() <= 1 => {
            shared.resume(rest.first().copied());
            done(out, "RESUME");
        }
        ["reload"] => match shared.reload().await {
            Ok(()) => done(out, "RELOAD"),
            Err(why) => codec::error_response(out, "ERROR", "F0000", &why),
        },
        _ => codec::error_response(
            out,
            "ERROR",
            "42601",
            "unknown admin command: try SHOW HELP",
        ),
    }
}

const HELP: &[&str] = &[
    "SHOW POOLS|STATS|CLIENTS|SERVERS|DATABASES|QUERIES|HELP",
    "PAUSE [db]: wait until the pools' server connections are idle, then hold new queries",
    "RESUME [db]: serve queries again",
    "RELOAD: re-read the configuration file (validated first)",
];

/// RowDescription, then a DataRow per row (JSON null as SQL NULL).
fn write_table(out: &mut BytesMut, table: &Table) {
    codec::message(out, b'T', |out| {
        out.put_i16(table.columns.len() as i16);
        for column in table.columns {
            codec::put_cstr(out, column);
            out.put_i32(0); // table oid
            out.put_i16(0); // column number
            out.put_i32(TEXT_OID);
            out.put_i16(-1); // variable length
            out.put_i32(-1); // no modifier
            out.put_i16(0); // text format
        }
    });
    for row in &table.rows {
        codec::message(out, b'D', |out| {
            out.put_i16(row.len() as i16);
            for cell in row {
                let text = match cell {
                    Value::Null => {
                        out.put_i32(-1);
                        continue;
                    }
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                out.put_i32(text.len() as i32);
                out.put_slice(text.as_bytes());
            }
        });
    }
}

//! One delivery of an event: a signed POST to the operator's URL, or the operator's command
//! with the event on its standard input. Either answers with bytes (a `pre-*` verdict).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{EventKind, HookError, Hooks};

/// Where events go.
#[derive(Debug, Clone)]
pub enum Target {
    Url(String),
    Command(PathBuf),
}

/// The largest answer read from a hook: a verdict is a small JSON object.
const MAX_ANSWER: u64 = 1 << 20;

pub(super) async fn send(hooks: &Hooks, kind: EventKind, body: &str) -> Result<Vec<u8>, HookError> {
    let timeout = hooks.settings.timeout;
    let sent = tokio::time::timeout(timeout, async {
        match &hooks.settings.target {
            Target::Url(url) => post(hooks, kind, url, body).await,
            Target::Command(path) => run(kind, path, body).await,
        }
    })
    .await;
    sent.unwrap_or(Err(HookError::TimedOut(kind.as_str(), timeout)))
}

async fn post(hooks: &Hooks, kind: EventKind, url: &str, body: &str) -> Result<Vec<u8>, HookError> {
    let name = kind.as_str();
    let mut request = hooks
        .client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(secret) = &hooks.settings.secret {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        request = request.header("resumable-signature", sign(secret, now, body.as_bytes()));
    }
    let response = request.send().await.map_err(|e| {
        if e.is_timeout() {
            HookError::TimedOut(name, hooks.settings.timeout)
        } else {
            HookError::Unreachable(name, error_chain(&e))
        }
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(HookError::Failed(name, format!("it answered {status}")));
    }
    let too_long = || HookError::BadAnswer(name, "the answer is over 1 MiB".into());
    if response.content_length().is_some_and(|n| n > MAX_ANSWER) {
        return Err(too_long());
    }
    let mut answer = Vec::new();
    let mut response = response;
    // Chunk by chunk: a chunked answer has no length to check first.
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HookError::Unreachable(name, error_chain(&e)))?
    {
        if (answer.len() + chunk.len()) as u64 > MAX_ANSWER {
            return Err(too_long());
        }
        answer.extend_from_slice(&chunk);
    }
    Ok(answer)
}

/// Runs the command with the event on its standard input; its standard output is the
/// answer. It is killed if it outlives --hooks-timeout (the future is dropped).
async fn run(kind: EventKind, path: &PathBuf, body: &str) -> Result<Vec<u8>, HookError> {
    let name = kind.as_str();
    let mut child = tokio::process::Command::new(path)
        .arg(name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Unreachable(name, format!("{}: {e}", path.display())))?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let body = body.as_bytes().to_vec();
    let feed = async move {
        if let Some(stdin) = stdin.as_mut() {
            // A command that does not read its input closes the pipe early: not a failure.
            let _ = stdin.write_all(&body).await;
            let _ = stdin.write_all(b"\n").await;
        }
        drop(stdin);
    };
    let read = async move {
        let mut answer = Vec::new();
        if let Some(stdout) = stdout.as_mut() {
            stdout.take(MAX_ANSWER).read_to_end(&mut answer).await?;
        }
        Ok::<_, std::io::Error>(answer)
    };
    let ((), answer) = tokio::join!(feed, read);
    let answer = answer.map_err(|e| HookError::Failed(name, e.to_string()))?;
    let exit = child
        .wait()
        .await
        .map_err(|e| HookError::Failed(name, e.to_string()))?;
    if !exit.success() {
        return Err(HookError::Failed(
            name,
            format!("the command exited with {exit}"),
        ));
    }
    Ok(answer)
}

/// `Resumable-Signature`: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub fn sign(secret: &str, unix_seconds: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(unix_seconds.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!("t={unix_seconds},v1={}", hex::encode(digest))
}

/// An error with its causes, which reqwest keeps apart ("error sending request" alone says
/// little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc_2104_hmac_sha256() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let signed = sign("Jefe", 0, b"what do ya want for nothing?");
        // The signed text is "0." followed by the body, so compute the RFC vector directly.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(signed.starts_with("t=0,v1="));
        assert_eq!(signed.len(), "t=0,v1=".len() + 64);
    }
}

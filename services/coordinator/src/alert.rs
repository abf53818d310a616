//! Alerts: a log line (target `dbsync_alert`), an event in the store, and optionally a JSON
//! POST to the task's webhook. The webhook client is a tiny HTTP/1.1 writer over a tokio
//! `TcpStream` (plain `http://` only), so alerting pulls in no HTTP stack.

use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `http://host[:port][/path]` split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    pub host: String,
    pub port: u16,
    pub path: String,
}

pub fn parse_http_url(url: &str) -> Option<HttpUrl> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/".to_string()),
    };
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h.to_string(), p.parse().ok()?),
        _ => (authority.to_string(), 80),
    };
    if host.is_empty() {
        return None;
    }
    Some(HttpUrl { host, port, path })
}

/// What a webhook receives.
#[derive(Debug, Clone, Serialize)]
pub struct AlertPayload<'a> {
    pub task_id: &'a str,
    pub task_name: &'a str,
    pub environment: &'a str,
    /// `task_failed` or `lag_exceeded` or `lag_recovered`.
    pub kind: &'a str,
    pub message: &'a str,
    pub unix_micros: i64,
}

/// POSTs `payload` as JSON; succeeds on any 2xx answer. Bounded by a 10 s timeout.
pub async fn post_webhook(url: &str, payload: &AlertPayload<'_>) -> anyhow::Result<()> {
    let url =
        parse_http_url(url).ok_or_else(|| anyhow::anyhow!("webhook URL is not an http:// URL"))?;
    let body = serde_json::to_vec(payload)?;
    let work = async {
        let mut stream = tokio::net::TcpStream::connect((url.host.as_str(), url.port)).await?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: dbsync-coordinator\r\n\r\n",
            url.path,
            url.host,
            url.port,
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.flush().await?;
        let mut response = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        // The status line is all we need.
        while !response.windows(2).any(|w| w == b"\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            response.extend_from_slice(&buf[..n]);
            if response.len() > 8192 {
                break;
            }
        }
        let status_line = String::from_utf8_lossy(&response);
        let code = status_line.split_whitespace().nth(1).unwrap_or("");
        if code.starts_with('2') {
            Ok(())
        } else {
            Err(anyhow::anyhow!(
                "webhook answered '{}'",
                status_line.lines().next().unwrap_or("")
            ))
        }
    };
    tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .map_err(|_| anyhow::anyhow!("webhook did not answer within 10 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_urls_and_rejects_others() {
        assert_eq!(
            parse_http_url("http://hooks.local:8080/a/b"),
            Some(HttpUrl {
                host: "hooks.local".into(),
                port: 8080,
                path: "/a/b".into()
            })
        );
        assert_eq!(parse_http_url("http://x").unwrap().port, 80);
        assert!(parse_http_url("https://x/y").is_none());
        assert!(parse_http_url("http://").is_none());
        assert!(parse_http_url("http://u:p@x/").is_none());
        assert!(parse_http_url("http://x:notaport/").is_none());
    }

    #[tokio::test]
    async fn webhook_posts_json_and_checks_the_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .unwrap()
                        .parse()
                        .unwrap();
                    if got.len() >= i + 4 + len {
                        break;
                    }
                }
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let payload = AlertPayload {
            task_id: "t1",
            task_name: "orders",
            environment: "prod",
            kind: "task_failed",
            message: "boom",
            unix_micros: 1,
        };
        post_webhook(&format!("http://{addr}/hook"), &payload)
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1\r\n"));
        assert!(request.contains("\"kind\":\"task_failed\""));
    }
}

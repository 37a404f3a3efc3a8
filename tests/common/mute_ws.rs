//! A WebSocket client made by hand on TCP that answers nothing, not even WebSocket pings
//! (tungstenite answers them by itself): for tests of what a server does with clients that
//! have gone quiet.

use super::ws::PATIENCE;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One `graphql-transport-ws` connection, past `connection_ack`; frames are read as they come.
pub struct MuteWs {
    tcp: TcpStream,
    buffer: Vec<u8>,
}

impl MuteWs {
    /// Upgrades to `graphql-transport-ws` and initialises with `key`.
    pub async fn connect(addr: SocketAddr, key: &str) -> MuteWs {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let upgrade = format!(
            "GET /graphql HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        );
        tcp.write_all(upgrade.as_bytes()).await.expect("send");
        let mut buffer = Vec::new();
        let mut chunk = [0u8; 4096];
        let end = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed during the upgrade");
            buffer.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buffer[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let mut mute = MuteWs {
            tcp,
            buffer: buffer[end..].to_vec(),
        };
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {key}") } });
        mute.send_text(&init.to_string()).await;
        let (opcode, payload) = mute
            .frame(Instant::now() + PATIENCE)
            .await
            .expect("an answer to connection_init");
        assert_eq!(opcode, 1, "{payload:?}");
        let ack: Value = serde_json::from_slice(&payload).expect("JSON");
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        mute
    }

    /// Sends a (masked, short) text frame.
    pub async fn send_text(&mut self, text: &str) {
        let payload = text.as_bytes();
        assert!(payload.len() < 65_536);
        let mut frame = vec![0x81];
        if payload.len() < 126 {
            frame.push(0x80 | payload.len() as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.tcp.write_all(&frame).await.expect("send");
    }

    /// The next frame (opcode, payload), or `None` when the connection ends; panics at
    /// `deadline`.
    pub async fn frame(&mut self, deadline: Instant) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buffer.len() >= 2 {
                let opcode = self.buffer[0] & 0x0f;
                let (length, start) = match self.buffer[1] & 0x7f {
                    126 if self.buffer.len() >= 4 => (
                        usize::from(u16::from_be_bytes([self.buffer[2], self.buffer[3]])),
                        4,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (usize::from(n), 2),
                };
                if length != usize::MAX && self.buffer.len() >= start + length {
                    let payload = self.buffer[start..start + length].to_vec();
                    self.buffer.drain(..start + length);
                    return Some((opcode, payload));
                }
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            let read = tokio::time::timeout(left, self.tcp.read(&mut chunk))
                .await
                .expect("nothing arrived in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

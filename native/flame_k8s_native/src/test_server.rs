//! A loopback HTTP/1.1 server for the tests that need real connections.
//!
//! A half-open connection cannot be faked above the socket. Each connection the server accepts
//! behaves as the test says for its index (from 0).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one connection does.
pub enum Conn {
    /// Reads the request and never answers, never closes: a half-open connection, as a NAT
    /// or a proxy that lost its state leaves it.
    Silent,
    /// Answers each request (`GET path`) with the reply the function gives.
    Serve(Arc<dyn Fn(&str) -> Reply + Send + Sync>),
}

pub enum Reply {
    /// 200 with this JSON body.
    Json(String),
    /// 200 and a chunked body that never comes (a watch without events).
    Open,
}

pub struct Server {
    pub url: String,
    /// Every request line received, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    pub connections: Arc<AtomicUsize>,
}

impl Server {
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// Starts the server on the current runtime.
pub async fn start<F>(behaviour: F) -> Server
where
    F: Fn(usize) -> Conn + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let connections = Arc::new(AtomicUsize::new(0));
    let (seen, count) = (requests.clone(), connections.clone());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(socket, behaviour(n), seen.clone()));
        }
    });
    Server {
        url,
        requests,
        connections,
    }
}

async fn serve(mut socket: TcpStream, conn: Conn, seen: Arc<Mutex<Vec<String>>>) {
    let mut buffer = Vec::new();
    loop {
        let Some(line) = read_request(&mut socket, &mut buffer).await else {
            return;
        };
        seen.lock().unwrap().push(line.clone());
        let answer = match &conn {
            Conn::Silent => {
                // Hold the socket, answer nothing.
                std::future::pending::<()>().await;
                return;
            }
            Conn::Serve(f) => f(line.split(' ').nth(1).unwrap_or("")),
        };
        match answer {
            Reply::Json(body) => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                if socket.write_all(head.as_bytes()).await.is_err()
                    || socket.write_all(body.as_bytes()).await.is_err()
                {
                    return;
                }
            }
            Reply::Open => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                let _ = socket.write_all(head.as_bytes()).await;
                std::future::pending::<()>().await;
            }
        }
    }
}

/// The request line of the next request (the requests here have no body).
async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
            buffer.drain(..end + 4);
            return head.lines().next().map(str::to_string);
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}

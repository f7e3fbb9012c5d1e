//! `GET /containers/json`, read into only the fields the index needs.
//!
//! bollard parses each entry into its full `ContainerSummary` (ports,
//! mounts, every endpoint setting, host config): about 3.7 MB of heap for
//! one list of 1000 containers, most of the proxy's peak memory at start-up
//! (heaptrack), kept by malloc afterwards. The list is the only call that
//! returns every container at once, so it alone is read here, over the same
//! `dockerHost` (unix socket or plain TCP, the schemes the config accepts)
//! and API version bollard agreed with the engine.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use serde::Deserialize;

use super::docker::sorted_addresses;
use crate::container::{Container, StringMap};

/// A list of 1000 containers is under a megabyte; this only stops a broken
/// engine from filling memory.
const MAX_LIST_BYTES: usize = 64 * 1024 * 1024;

/// One entry of the list, as far as the index reads it.
#[derive(Debug, Deserialize)]
pub struct Listed {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "Names", default)]
    names: Option<Vec<String>>,
    #[serde(rename = "Labels", default)]
    labels: Option<StringMap>,
    #[serde(rename = "Image", default)]
    image: Option<String>,
    #[serde(rename = "NetworkSettings", default)]
    network_settings: Option<NetworkSettings>,
}

#[derive(Debug, Deserialize)]
struct NetworkSettings {
    #[serde(rename = "Networks", default)]
    networks: Option<HashMap<String, Endpoint>>,
}

#[derive(Debug, Deserialize)]
struct Endpoint {
    #[serde(rename = "IPAddress", default)]
    ip_address: Option<String>,
    #[serde(rename = "GlobalIPv6Address", default)]
    global_ipv6_address: Option<String>,
}

impl Listed {
    /// The index's view: the first name, the labels, and the addresses on
    /// all networks (empty ones, of endpoints still starting, left out).
    pub fn into_container(self) -> Container {
        let Listed {
            id,
            names,
            labels,
            image,
            network_settings,
        } = self;
        let endpoints = network_settings
            .as_ref()
            .and_then(|settings| settings.networks.as_ref());
        let ips = sorted_addresses(endpoints.into_iter().flat_map(|networks| {
            networks.values().flat_map(|endpoint| {
                [
                    endpoint.ip_address.as_deref(),
                    endpoint.global_ipv6_address.as_deref(),
                ]
            })
        }));
        let name = names
            .as_ref()
            .and_then(|names| names.first())
            .map_or("", String::as_str);
        Container::new(id, name, labels.unwrap_or_default(), ips)
            .with_image(image.unwrap_or_default())
    }
}

pub fn parse(body: &[u8]) -> Result<Vec<Listed>, serde_json::Error> {
    serde_json::from_slice(body)
}

/// Lists the running containers of the engine at `host` (`unix://PATH`,
/// `tcp://HOST:PORT` or `http://HOST:PORT`), speaking API `version`
/// (`1.41`). The error names what failed, for the caller's message.
pub async fn list(host: &str, version: &str, timeout: Duration) -> Result<Vec<Listed>, String> {
    let body = tokio::time::timeout(timeout, get(host, &format!("/v{version}/containers/json")))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))??;
    parse(&body).map_err(|e| format!("unreadable answer: {e}"))
}

async fn get(host: &str, path: &str) -> Result<Bytes, String> {
    let request = http::Request::get(path)
        // Docker ignores the host of a unix-socket request, but HTTP/1.1 needs one.
        .header(http::header::HOST, "docker")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = if let Some(socket) = host.strip_prefix("unix://") {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect {socket}: {e}"))?;
        send(stream, request).await?
    } else {
        let address = host
            .strip_prefix("tcp://")
            .or_else(|| host.strip_prefix("http://"))
            .ok_or_else(|| format!("unsupported Docker host {host:?}"))?
            .trim_end_matches('/');
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        send(stream, request).await?
    };
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_LIST_BYTES)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(format!("HTTP {status}: {}", text.trim()));
    }
    Ok(body)
}

async fn send<S>(
    stream: S,
    request: http::Request<Empty<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // One request per connection: the connection ends with its response.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as Docker Engine 28 lists it (trimmed of nothing the index
    /// ignores: ports, mounts, host config and all endpoint settings).
    const ENGINE_28: &str = r#"[{
        "Id": "8dfafdbc3a40a1c0b2b7b6c1c0e3f8a6a8b0c2d4e6f8a0b2c4d6e8f0a2b4c6d8",
        "Names": ["/web-1"],
        "Image": "app:latest",
        "ImageID": "sha256:0000",
        "Command": "/app",
        "Created": 1732500000,
        "Ports": [{"PrivatePort": 8080, "Type": "tcp"}],
        "Labels": {"ec2metaproxy.RoleAlias": "web", "team": "a"},
        "State": "running",
        "Status": "Up 2 minutes",
        "HostConfig": {"NetworkMode": "bridge"},
        "NetworkSettings": {"Networks": {
            "bridge": {"IPAMConfig": null, "Links": null, "Aliases": null,
                "NetworkID": "7ea29fc1412292a2d7bba362f9253545fecdfa8ce9a6e37dd10ba8bee7129812",
                "EndpointID": "2cdc4edb1ded3631c81f57966563e5c8525b81121bb3706a9a9a3ae102711f3f",
                "Gateway": "172.17.0.1", "IPAddress": "172.17.0.2", "IPPrefixLen": 16,
                "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
                "MacAddress": "02:42:ac:11:00:02", "DriverOpts": null},
            "backend": {"IPAddress": "10.9.0.5", "GlobalIPv6Address": "fd00::5"},
            "starting": {"IPAddress": ""}
        }},
        "Mounts": []
    }, {
        "Id": "bare",
        "Names": null,
        "Labels": null,
        "NetworkSettings": null
    }]"#;

    #[test]
    fn reads_what_the_index_needs_from_a_real_list() {
        let listed: Vec<Container> = parse(ENGINE_28.as_bytes())
            .unwrap()
            .into_iter()
            .map(Listed::into_container)
            .collect();
        assert_eq!(listed.len(), 2);
        let web = &listed[0];
        assert_eq!(web.id.len(), 64);
        assert_eq!(web.name, "web-1");
        assert_eq!(
            web.ips,
            ["10.9.0.5", "172.17.0.2", "fd00::5"]
                .map(|ip| ip.parse::<std::net::IpAddr>().unwrap())
                .to_vec()
        );
        assert_eq!(web.labels["ec2metaproxy.RoleAlias"], "web");
        assert_eq!(web.labels.len(), 2);
        let bare = &listed[1];
        assert_eq!((bare.id.as_str(), bare.name.as_str()), ("bare", ""));
        assert!(bare.ips.is_empty());
        assert_eq!(bare.labels, StringMap::default());
    }

    #[test]
    fn an_answer_that_is_not_a_list_is_an_error() {
        assert!(parse(br#"{"message": "page not found"}"#).is_err());
        assert!(parse(br#"[{"Names": ["/no-id"]}]"#).is_err());
    }

    #[tokio::test]
    async fn lists_over_a_unix_socket_and_names_http_errors() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for (status, body) in [
                ("200 OK", ENGINE_28),
                ("500 Internal Server Error", "{\"message\":\"boom\"}"),
            ] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    stream.read_exact(&mut byte).await.unwrap();
                    head.push(byte[0]);
                }
                requests.push(String::from_utf8(head).unwrap());
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(answer.as_bytes()).await.unwrap();
            }
            requests
        });
        let host = format!("unix://{}", socket.display());
        let listed = list(&host, "1.41", Duration::from_secs(5)).await.unwrap();
        assert_eq!(listed.len(), 2);
        let error = list(&host, "1.41", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(error.contains("500") && error.contains("boom"), "{error}");
        let requests = server.await.unwrap();
        assert!(
            requests[0].starts_with("GET /v1.41/containers/json HTTP/1.1\r\n"),
            "{}",
            requests[0]
        );
    }

    #[tokio::test]
    async fn a_missing_socket_is_named() {
        let error = list(
            "unix:///nonexistent/docker.sock",
            "1.41",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(error.contains("/nonexistent/docker.sock"), "{error}");
    }
}

//! Real OTLP receivers for the tests: a gRPC TraceService (tonic, with the OpenTelemetry
//! protocol's own types) and an HTTP endpoint taking protobuf bodies at /v1/traces, each in plain
//! text or over TLS (optionally asking for a client certificate). Both keep every span they
//! receive.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One span as received.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub name: String,
    /// Hex, as in `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// 2 server, 3 client, 1 internal.
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// The resource's `service.name`.
    pub service: String,
}

type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

/// A running receiver.
pub struct Collector {
    pub addr: SocketAddr,
    spans: Spans,
    server: JoinHandle<()>,
}

/// A receiver's TLS: its certificate chain and key (PEM) and, to require client certificates,
/// the CA they must chain to.
pub struct ServerTls {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    pub client_ca: Option<Vec<u8>>,
}

impl ServerTls {
    fn rustls(&self) -> tokio_rustls::TlsAcceptor {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(ca) {
                    roots.add(cert.unwrap()).unwrap();
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        let chain = CertificateDer::pem_slice_iter(&self.cert)
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(&self.key).unwrap();
        let config = builder.with_single_cert(chain, key).unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    }
}

impl Collector {
    /// An OTLP/gRPC receiver on a free loopback port.
    pub async fn grpc() -> Self {
        Self::grpc_over(None).await
    }

    /// An OTLP/gRPC receiver on a free loopback port, over TLS.
    pub async fn grpc_tls(tls: &ServerTls) -> Self {
        Self::grpc_over(Some(tls)).await
    }

    async fn grpc_over(tls: Option<&ServerTls>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Spans::default();
        let service = TraceServiceServer::new(Grpc(Arc::clone(&spans)));
        let incoming = futures_util::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(socket, _)| socket);
            Some((accepted, listener))
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some(tls) = tls {
            use tonic::transport::{Certificate, Identity, ServerTlsConfig};
            let mut config =
                ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key));
            if let Some(ca) = &tls.client_ca {
                config = config.client_ca_root(Certificate::from_pem(ca));
            }
            builder = builder.tls_config(config).unwrap();
        }
        let server = tokio::spawn(async move {
            let _ = builder
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        });
        Self {
            addr,
            spans,
            server,
        }
    }

    /// An OTLP/HTTP (protobuf) receiver on a free loopback port, at /v1/traces.
    pub async fn http() -> Self {
        Self::http_over(None).await
    }

    /// An OTLP/HTTP (protobuf) receiver on a free loopback port, over TLS.
    pub async fn http_tls(tls: &ServerTls) -> Self {
        Self::http_over(Some(tls.rustls())).await
    }

    async fn http_over(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Spans::default();
        let kept = Arc::clone(&spans);
        let server = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let kept = Arc::clone(&kept);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            let path_ok = req.uri().path() == "/v1/traces";
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            let decoded = body
                                .ok()
                                .and_then(|b| ExportTraceServiceRequest::decode(b).ok());
                            let status = match (path_ok, decoded) {
                                (true, Some(request)) => {
                                    keep(&kept, request);
                                    200
                                }
                                _ => 400,
                            };
                            let answer = ExportTraceServiceResponse::default().encode_to_vec();
                            let mut response = hyper::Response::new(Full::new(Bytes::from(answer)));
                            *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            response
                                .headers_mut()
                                .insert("content-type", "application/x-protobuf".parse().unwrap());
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(socket), service).await,
                        Some(tls) => match tls.accept(socket).await {
                            Ok(socket) => {
                                http.serve_connection(TokioIo::new(socket), service).await
                            }
                            // A client that fails the handshake sends nothing.
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Self {
            addr,
            spans,
            server,
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

struct Grpc(Spans);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn keep(spans: &Spans, request: ExportTraceServiceRequest) {
    let mut kept = spans.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans
            .resource
            .map(|r| attributes(&r.attributes))
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(ReceivedSpan {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    service: service.clone(),
                });
            }
        }
    }
}

fn attributes(list: &[KeyValue]) -> BTreeMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(n)) => n.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

//! TCP connections to upstream servers: actix-tls's connector, with Nagle's algorithm off.
//!
//! A request head and its body leave in separate writes; with Nagle on, the body waits for the
//! server's delayed ACK (about 40 ms). Measured before this: a 200 KB upload took 43 ms
//! through gatehouse instead of 3.

use actix_rt::net::TcpStream;
use actix_service::Service;
use actix_tls::connect::{
    ConnectError, ConnectInfo, Connection, Connector, ConnectorService, Resolver,
};
use actix_web::http::Uri;
use futures_util::future::LocalBoxFuture;

/// Connects like awc's default connector, then sets `TCP_NODELAY`.
#[derive(Clone)]
pub(crate) struct NoDelayConnector(ConnectorService);

impl NoDelayConnector {
    pub(crate) fn new() -> Self {
        Self(Connector::new(Resolver::default()).service())
    }
}

impl Service<ConnectInfo<Uri>> for NoDelayConnector {
    type Response = Connection<Uri, TcpStream>;
    type Error = ConnectError;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    actix_service::always_ready!();

    fn call(&self, target: ConnectInfo<Uri>) -> Self::Future {
        let connecting = self.0.call(target);
        Box::pin(async move {
            let connection = connecting.await?;
            // Failing to set it costs latency, not correctness: keep the connection.
            let _ = connection.io_ref().set_nodelay(true);
            Ok(connection)
        })
    }
}

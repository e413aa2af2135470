//! One ACME order (RFC 8555 §7.4): arm a challenge answer per name, tell the CA it is ready,
//! wait for validation, send a CSR for a fresh ECDSA P-256 key, fetch the chain.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier, NewOrder,
    OrderStatus, RetryPolicy,
};
use rcgen::{CertificateParams, DistinguishedName, KeyPair};

use super::challenges::{Armed, Challenges};
use crate::config::ChallengeKind;

/// How long the CA may take to validate, and then to issue.
const VALIDATION_WAIT: Duration = Duration::from_secs(120);

/// Why an order did not give a certificate; the text is the CA's where it said something.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IssueError {
    /// The CA refused a request or could not be reached.
    #[error("{0}")]
    Acme(#[from] instant_acme::Error),
    /// The CA could not validate a name; its reasons, per name.
    #[error("validation failed: {0}")]
    Validation(String),
    /// The CA offered none of the configured challenge types for a name.
    #[error("{name}: the CA offers none of the challenge types configured ({offered} offered)")]
    NoChallenge {
        /// The name.
        name: String,
        /// What the CA offered.
        offered: String,
    },
    /// A key, CSR or challenge certificate could not be made.
    #[error("cannot make {what}: {why}")]
    Crypto {
        /// What was being made.
        what: &'static str,
        /// Why not.
        why: String,
    },
}

/// A certificate chain and its private key, both PEM.
pub(crate) struct Issued {
    pub(crate) chain_pem: String,
    pub(crate) key_pem: String,
}

/// Obtains a certificate for `hosts`, answering with the first of `preferred` the CA offers.
/// `replaces` names the certificate being renewed, for CAs with renewal info (RFC 9773).
pub(crate) async fn issue(
    account: &Account,
    hosts: &[String],
    preferred: &[ChallengeKind],
    challenges: &Arc<Challenges>,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<Issued, IssueError> {
    let identifiers: Vec<Identifier> = hosts.iter().cloned().map(Identifier::Dns).collect();
    let mut new_order = NewOrder::new(&identifiers);
    if let Some(replaces) = replaces {
        new_order = new_order.replaces(replaces);
    }
    let mut order = account.new_order(&new_order).await?;
    // Answers stay armed until the order is decided, then disarm themselves.
    let mut armed: Vec<Armed> = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(IssueError::Validation(format!(
                    "{}: the authorization is {status:?}",
                    authorization.identifier()
                )));
            }
        }
        let name = authorization.identifier().to_string();
        let offered: Vec<ChallengeType> = authorization
            .challenges
            .iter()
            .map(|c| c.r#type.clone())
            .collect();
        let Some(kind) = preferred
            .iter()
            .copied()
            .find(|kind| offered.contains(&challenge_type(*kind)))
        else {
            return Err(IssueError::NoChallenge {
                name,
                offered: format!("{offered:?}"),
            });
        };
        let mut challenge = authorization
            .challenge(challenge_type(kind))
            .expect("the challenge type was just found");
        let key_authorization = challenge.key_authorization();
        armed.push(match kind {
            ChallengeKind::Http01 => {
                challenges.arm_http(&challenge.token, key_authorization.as_str())
            }
            ChallengeKind::TlsAlpn01 => challenges
                .arm_tls_alpn(&name, key_authorization.digest().as_ref())
                .map_err(|why| IssueError::Crypto {
                    what: "the TLS-ALPN-01 certificate",
                    why,
                })?,
        });
        challenge.set_ready().await?;
    }
    let patience = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .backoff(1.5)
        .timeout(VALIDATION_WAIT);
    let status = match order.poll_ready(&patience).await {
        // The order's own error: the CA's account of the failed validation.
        Err(instant_acme::Error::Api(problem)) => {
            return Err(IssueError::Validation(problem.to_string()));
        }
        other => other?,
    };
    if status != OrderStatus::Ready {
        return Err(IssueError::Validation(
            validation_failures(&mut order).await,
        ));
    }
    drop(armed);
    let key = KeyPair::generate().map_err(|err| IssueError::Crypto {
        what: "a private key",
        why: err.to_string(),
    })?;
    let csr = certificate_request(hosts, &key).map_err(|err| IssueError::Crypto {
        what: "the certificate request",
        why: err.to_string(),
    })?;
    order.finalize_csr(&csr).await?;
    let chain_pem = order.poll_certificate(&patience).await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

fn challenge_type(kind: ChallengeKind) -> ChallengeType {
    match kind {
        ChallengeKind::Http01 => ChallengeType::Http01,
        ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
    }
}

/// A CSR naming every host, with an empty subject (the names are in the SAN extension).
fn certificate_request(hosts: &[String], key: &KeyPair) -> Result<Vec<u8>, rcgen::Error> {
    let mut params = CertificateParams::new(hosts.to_vec())?;
    params.distinguished_name = DistinguishedName::new();
    Ok(params.serialize_request(key)?.der().to_vec())
}

/// What the CA said about each failed challenge of an invalid order.
async fn validation_failures(order: &mut instant_acme::Order) -> String {
    let mut reasons = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else {
            continue;
        };
        let name = state.identifier().to_string();
        reasons.extend(
            state
                .challenges
                .iter()
                .filter_map(|c| c.error.as_ref())
                .map(|problem| format!("{name}: {problem}")),
        );
    }
    if reasons.is_empty() {
        "the CA marked the order invalid without saying why".into()
    } else {
        reasons.join("; ")
    }
}

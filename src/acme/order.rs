//! One order (RFC 8555 §7.4): new order → answer each pending authorisation's challenge →
//! wait until the order is ready → finalize with a CSR for a fresh key → download the chain.
//! The result is one PEM text, key first, written to storage by the caller.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, OrderStatus, RetryPolicy,
};
use rcgen::{
    CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
    RsaKeySize,
};
use rustls::crypto::CryptoProvider;

use super::AcmeError;
use super::challenges::Challenges;
use crate::config::model::{AcmeChallenge, AcmeKeyType};
use crate::config::validate::acme::AcmeConfig;

/// How long the CA may take to validate every challenge of an order.
const VALIDATION: Duration = Duration::from_secs(120);
/// How long the CA may take to issue after finalization.
const ISSUANCE: Duration = Duration::from_secs(60);

/// What to order.
#[derive(Debug)]
pub struct Wanted<'a> {
    /// The names, all on the certificate (the first is the host's label).
    pub names: &'a [String],
    /// The key type.
    pub kind: AcmeKeyType,
    /// The certificate this one replaces (ARI), when the CA supports it.
    pub replaces: Option<instant_acme::CertificateIdentifier<'static>>,
}

/// Orders and downloads one certificate; returns key and chain as PEM.
pub async fn obtain(
    account: &Account,
    settings: &AcmeConfig,
    challenges: &Arc<Challenges>,
    provider: &Arc<CryptoProvider>,
    wanted: Wanted<'_>,
) -> Result<String, AcmeError> {
    let identifiers: Vec<Identifier> = wanted.names.iter().cloned().map(Identifier::Dns).collect();
    let mut new = NewOrder::new(&identifiers);
    if let Some(profile) = &settings.profile {
        new = new.profile(profile);
    }
    if let Some(replaces) = wanted.replaces {
        new = new.replaces(replaces);
    }
    let mut order = account.new_order(&new).await?;
    // Each answer is withdrawn when this list is dropped, however the order ends.
    let mut answers = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let name = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::Challenge {
                    name,
                    problem: format!("the authorization is {status:?}"),
                });
            }
        }
        let kind = match settings.challenge {
            AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
            AcmeChallenge::Http01 => ChallengeType::Http01,
        };
        let Some(mut challenge) = authorization.challenge(kind.clone()) else {
            return Err(AcmeError::Challenge {
                name,
                problem: format!("the CA offers no {kind:?} challenge"),
            });
        };
        let key_authorization = challenge.key_authorization();
        answers.push(match settings.challenge {
            AcmeChallenge::TlsAlpn01 => challenges
                .add_tls_alpn(provider, &name, key_authorization.as_str())
                .map_err(|e| AcmeError::Certificate(e.to_string()))?,
            AcmeChallenge::Http01 => {
                challenges.add_http(&name, &challenge.token, key_authorization.as_str())
            }
        });
        challenge.set_ready().await?;
    }
    let waiting = RetryPolicy::new()
        .initial_delay(Duration::from_millis(250))
        .timeout(VALIDATION);
    let status = order.poll_ready(&waiting).await?;
    if status != OrderStatus::Ready {
        return Err(validation_failure(&mut order).await);
    }
    drop(answers);
    let key = match wanted.kind {
        AcmeKeyType::EcdsaP256 => KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256),
        AcmeKeyType::Rsa2048 => KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048),
    }
    .map_err(|e| AcmeError::Certificate(format!("cannot generate the key: {e}")))?;
    // An empty subject: rcgen's default common name would be one more name to issue for, which
    // Let's Encrypt refuses. The names are the subjectAltNames.
    let csr = CertificateParams::new(wanted.names.to_vec())
        .and_then(|mut params| {
            params.distinguished_name = DistinguishedName::new();
            params.serialize_request(&key)
        })
        .map_err(|e| AcmeError::Certificate(format!("cannot make the CSR: {e}")))?;
    order.finalize_csr(csr.der()).await?;
    let issuing = RetryPolicy::new().timeout(ISSUANCE);
    let chain = order.poll_certificate(&issuing).await?;
    Ok(format!("{}{chain}", key.serialize_pem()))
}

/// The CA's reason for an invalid order: the first failed challenge's problem document.
async fn validation_failure(order: &mut instant_acme::Order) -> AcmeError {
    let mut authorizations = order.authorizations();
    while let Some(Ok(authorization)) = authorizations.next().await {
        let failed = authorization
            .challenges
            .iter()
            .find_map(|c| c.error.as_ref());
        if let Some(problem) = failed {
            return AcmeError::Challenge {
                name: authorization.identifier().to_string(),
                problem: problem.to_string(),
            };
        }
    }
    AcmeError::Challenge {
        name: "(order)".to_owned(),
        problem: "the order became invalid".to_owned(),
    }
}

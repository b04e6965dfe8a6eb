//! The connection to the CA: an HTTPS client that trusts the system's roots (or `acme.ca`),
//! bounds every request in time and remembers the CA's last `Retry-After`; and the account,
//! loaded from storage or registered once and stored.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::Request;
use hyper::header::RETRY_AFTER;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AccountCredentials, BodyWrapper, BytesResponse, ExternalAccountKey, HttpClient,
    NewAccount,
};
use rustls::crypto::CryptoProvider;

use super::AcmeError;
use super::storage;
use crate::config::validate::acme::AcmeConfig;

/// One request to the CA may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The `Retry-After` of the CA's last refusal, shared by an account's client and the manager.
#[derive(Debug, Clone, Default)]
pub struct RetryAfter(Arc<Mutex<Option<SystemTime>>>);

impl RetryAfter {
    /// Takes the remembered value: how much longer to wait from now, if anything.
    pub fn take(&self) -> Option<Duration> {
        let at = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()?;
        at.duration_since(SystemTime::now()).ok()
    }

    fn set(&self, at: SystemTime) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(at);
    }
}

type Https = Client<hyper_rustls::HttpsConnector<HttpConnector>, BodyWrapper<Bytes>>;

/// instant-acme's HTTP client, with a timeout per request and `Retry-After` remembered.
struct CaClient {
    inner: Https,
    retry_after: RetryAfter,
}

impl HttpClient for CaClient {
    fn request(
        &self,
        req: Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let sent = HttpClient::request(&self.inner, req);
        let retry_after = self.retry_after.clone();
        Box::pin(async move {
            let rsp = match tokio::time::timeout(REQUEST_TIMEOUT, sent).await {
                Ok(rsp) => rsp?,
                Err(_) => return Err(instant_acme::Error::Str("the CA did not answer in time")),
            };
            let refused = rsp.parts.status.is_client_error() || rsp.parts.status.is_server_error();
            if refused && let Some(at) = retry_after_header(&rsp) {
                retry_after.set(at);
            }
            Ok(rsp)
        })
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110).
fn retry_after_header(rsp: &BytesResponse) -> Option<SystemTime> {
    let value = rsp.parts.headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    match value.parse::<u64>() {
        Ok(secs) => Some(SystemTime::now() + Duration::from_secs(secs)),
        Err(_) => httpdate::parse_http_date(value).ok(),
    }
}

fn http_client(
    settings: &AcmeConfig,
    provider: &Arc<CryptoProvider>,
    retry_after: &RetryAfter,
) -> Result<Box<dyn HttpClient>, AcmeError> {
    let builder = hyper_rustls::HttpsConnectorBuilder::new();
    let builder = match &settings.ca {
        Some(certs) => {
            let mut roots = rustls::RootCertStore::empty();
            let (_, unusable) = roots.add_parsable_certificates(certs.iter().cloned());
            if roots.is_empty() {
                return Err(AcmeError::Setup(format!(
                    "acme.ca: none of its {unusable} certificates is a usable trust anchor"
                )));
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::clone(provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| AcmeError::Setup(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            builder.with_tls_config(config)
        }
        None => builder
            .with_provider_and_platform_verifier(Arc::clone(provider))
            .map_err(|e| AcmeError::Setup(format!("system trust store: {e}")))?,
    };
    let connector = builder.https_only().enable_http1().enable_http2().build();
    Ok(Box::new(CaClient {
        inner: Client::builder(TokioExecutor::new()).build(connector),
        retry_after: retry_after.clone(),
    }))
}

/// The account at the configured CA: from its credentials in storage, or registered now (with
/// the contacts and external account binding) and stored, readable by the owner only.
pub async fn account(
    settings: &AcmeConfig,
    provider: &Arc<CryptoProvider>,
    retry_after: &RetryAfter,
) -> Result<Account, AcmeError> {
    let path = storage::account_file(&settings.storage, &settings.directory);
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<AccountCredentials>(&bytes) {
            Ok(credentials) => {
                let http = http_client(settings, provider, retry_after)?;
                return Account::builder_with_http(http)
                    .from_credentials(credentials)
                    .await
                    .map_err(AcmeError::from);
            }
            Err(e) => tracing::warn!(
                file = %path.display(),
                error = %e,
                "ACME account credentials unreadable; registering a new account"
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(storage::StorageError { path, source }.into()),
    }
    let contact: Vec<&str> = settings.contact.iter().map(String::as_str).collect();
    let eab = settings
        .eab
        .as_ref()
        .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let http = http_client(settings, provider, retry_after)?;
    let (account, credentials) = Account::builder_with_http(http)
        .create(&new, settings.directory.clone(), eab.as_ref())
        .await?;
    let json =
        serde_json::to_vec_pretty(&credentials).map_err(|e| AcmeError::Setup(e.to_string()))?;
    storage::write_private(&path, &json)?;
    tracing::info!(
        acme.account = account.id(),
        file = %path.display(),
        "registered ACME account"
    );
    Ok(account)
}

/// Forgets a stored account the CA no longer knows (e.g. a test CA restarted), so the next
/// attempt registers a new one. The old file is kept beside it for inspection.
pub fn forget_account(settings: &AcmeConfig) {
    let path = storage::account_file(&settings.storage, &settings.directory);
    let _ = std::fs::rename(&path, path.with_extension("json.unknown"));
}

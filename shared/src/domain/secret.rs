//! A credential as a type: provider keys, the Upstash token and webhook secrets travel as [`Secret`] from
//! the configuration (which reads them) to the adapters (which send them). A leaf, so an adapter can
//! hold a key without importing the configuration.

/// A credential, held in a [`secrecy::SecretString`] (wiped from memory when dropped). Its `Debug` never
/// shows it, so it cannot end up in a log line; [`Secret::expose`] is the one way to read it.
#[derive(Clone)]
pub struct Secret(secrecy::SecretString);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(secrecy::SecretString::from(value.into()))
    }
    pub(crate) fn expose(&self) -> &str {
        use secrecy::ExposeSecret;
        self.0.expose_secret()
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

//! The operator's error type.

/// Errors of the reconciler and its helpers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kube api: {0}")]
    Kube(#[source] kube::Error),
    /// The finalizer helper failed.
    // NB: boxed because finalizer::Error embeds Self, which would make the
    // type infinitely sized (same as controller-rs).
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The master's admin API failed or was unreachable.
    #[error("master {addr}: {status}")]
    Master {
        /// Address the operator dialled.
        addr: String,
        /// gRPC status.
        status: Box<tonic::Status>,
    },
    /// The master does not know the chunkserver of this ordinal.
    #[error("master has no chunkserver for ordinal {ordinal}")]
    UnknownChunkserver {
        /// StatefulSet ordinal.
        ordinal: i32,
    },
    /// The object lacks a field the reconciler needs.
    #[error("object is missing {0}")]
    MissingField(&'static str),
    /// A quantity in the spec did not parse.
    #[error("invalid quantity {0:?}")]
    Quantity(String),
    /// Generating or signing a certificate failed.
    #[error("certificate: {0}")]
    Certificate(#[source] gfs_common::Error),
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

impl Error {
    /// Returns a short, bounded label for the failure metric.
    pub fn metric_label(&self) -> String {
        match self {
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::Master { .. } => "master",
            Error::UnknownChunkserver { .. } => "unknown_chunkserver",
            Error::MissingField(_) => "missing_field",
            Error::Quantity(_) => "quantity",
            Error::Certificate(_) => "certificate",
        }
        .to_string()
    }
}

/// Result with the operator's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

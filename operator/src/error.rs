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
    /// Some steps of a reconcile failed; the others ran (see
    /// `controller::Faults`).
    #[error("{}", faults.iter().map(|f| format!("{}: {}", f.what, f.message)).collect::<Vec<_>>().join("; "))]
    Partial {
        /// What failed, first failure first.
        faults: Vec<Fault>,
    },
}

/// One failed step of a reconcile that did not stop the others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The step, e.g. `apply StatefulSet demo-chunkserver`.
    pub what: String,
    /// `Error::reason()` of its error.
    pub reason: String,
    /// Its error as text.
    pub message: String,
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

/// Reasons the apiserver gives (`Status.reason`) that name the failure
/// well enough to alert on; any other becomes `Other`, so the metric's
/// label set stays bounded whatever a server sends.
const KUBE_REASONS: [&str; 10] = [
    "Invalid",
    "Forbidden",
    "Conflict",
    "NotFound",
    "AlreadyExists",
    "Unauthorized",
    "Timeout",
    "TooManyRequests",
    "InternalError",
    "BadRequest",
];

impl Error {
    /// The real reason, in CamelCase like Kubernetes' reasons: the
    /// apiserver's reason for a refused call (`KubeInvalid`,
    /// `KubeForbidden`...), the wrapped error's for a finalizer step, the
    /// first failure's for a partial reconcile. Bounded: fit for a metric
    /// label and a condition reason.
    pub fn reason(&self) -> String {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube(e) => kube_reason(e),
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.reason(),
                F::AddFinalizer(e) | F::RemoveFinalizer(e) => kube_reason(e),
                F::UnnamedObject | F::InvalidFinalizer => "Finalizer".into(),
            },
            Error::Master { .. } => "MasterError".into(),
            Error::UnknownChunkserver { .. } => "UnknownChunkserver".into(),
            Error::MissingField(_) => "MissingField".into(),
            Error::Quantity(_) => "InvalidQuantity".into(),
            Error::Certificate(_) => "CertificateError".into(),
            Error::Partial { faults } => faults.first().map(|f| f.reason.clone()).unwrap_or_else(|| "Partial".into()),
        }
    }

    /// Returns a short, bounded label for the failure metric: `reason()`.
    pub fn metric_label(&self) -> String {
        self.reason()
    }

    /// Whether the reconcile ran its other steps (a partial failure).
    pub fn is_partial(&self) -> bool {
        matches!(self, Error::Partial { .. })
    }
}

/// `KubeInvalid`, `KubeForbidden`... for a call the apiserver refused;
/// `KubeUnreachable` for one that got no answer.
fn kube_reason(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => {
            let r = KUBE_REASONS.iter().find(|r| **r == s.reason).copied().unwrap_or("Other");
            format!("Kube{r}")
        }
        _ => "KubeUnreachable".into(),
    }
}

/// Result with the operator's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(reason: &str, code: u16) -> Error {
        Error::Kube(kube::Error::Api(Box::new(kube::core::Status {
            code,
            reason: reason.into(),
            message: "refused".into(),
            ..Default::default()
        })))
    }

    #[test]
    fn reasons_name_the_apiserver_answer_and_stay_bounded() {
        assert_eq!(api("Invalid", 422).reason(), "KubeInvalid");
        assert_eq!(api("Forbidden", 403).reason(), "KubeForbidden");
        assert_eq!(api("SomethingAServerMadeUp", 500).reason(), "KubeOther");
        let wrapped = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(api("Conflict", 409))));
        assert_eq!(wrapped.metric_label(), "KubeConflict");
        let partial = Error::Partial {
            faults: vec![Fault {
                what: "apply StatefulSet x".into(),
                reason: "KubeInvalid".into(),
                message: "m".into(),
            }],
        };
        assert_eq!(partial.reason(), "KubeInvalid");
        assert!(partial.is_partial() && partial.to_string().contains("apply StatefulSet x: m"));
    }
}

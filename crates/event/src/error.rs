//! Errors of the event model: one enum per group of operations.

/// A text that is not one of an enumeration's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: expected one of {}", expected.join(", "))]
pub struct ParseEnumError {
    /// Which enumeration (`category`, `outcome`, ...).
    pub kind: &'static str,
    /// The text that was given (cut to 64 characters).
    pub value: String,
    /// The accepted values.
    pub expected: &'static [&'static str],
}

/// Why an event cannot be accepted. Each variant names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    /// A required field is empty.
    #[error("{field} is required")]
    Missing {
        /// The field's stored name.
        field: String,
    },
    /// A text field is longer than the format allows.
    #[error("{field} is {len} bytes long; at most {max} are allowed")]
    TooLong {
        /// The field's stored name.
        field: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A collection has more entries than the format allows.
    #[error("{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        /// The field's stored name.
        field: String,
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A value has the wrong shape.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The field's stored name.
        field: String,
        /// What is wrong, and what is expected.
        reason: String,
    },
    /// An enumeration's text is not one of its values.
    #[error("{field}: {source}")]
    Enum {
        /// The field's stored name.
        field: String,
        /// The parse failure.
        #[source]
        source: ParseEnumError,
    },
}

/// Why an event could not be appended to a chain.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    /// The event failed validation.
    #[error("event {event_id} rejected: {source}")]
    Invalid {
        /// The rejected event's id.
        event_id: uuid::Uuid,
        /// What is wrong with it.
        #[source]
        source: ValidationError,
    },
    /// A chain id that cannot be used in a file name.
    #[error("invalid chain id {chain_id:?}: {reason}")]
    InvalidChainId {
        /// The chain id given.
        chain_id: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A tenant name that cannot be used as a partition path segment.
    #[error("invalid tenant {tenant:?}: {reason}")]
    InvalidTenant {
        /// The tenant given.
        tenant: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The event belongs to another tenant than the chain.
    #[error(
        "event {event_id} is for tenant {event_tenant:?} but chain {chain_id} is for tenant {chain_tenant:?}"
    )]
    TenantMismatch {
        /// The chain.
        chain_id: String,
        /// The chain's tenant.
        chain_tenant: String,
        /// The event's tenant.
        event_tenant: String,
        /// The event.
        event_id: uuid::Uuid,
    },
    /// The sequence number space is exhausted.
    #[error("chain {chain_id} has reached the maximum sequence number")]
    SeqOverflow {
        /// The chain.
        chain_id: String,
    },
}

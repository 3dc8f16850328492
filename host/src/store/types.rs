//! The domain's types as Postgres values. Each closed set is stored as its
//! wire name in a `text` column (guarded there by a `CHECK`) and read back
//! into the enum, so rows carry `ActivityStatus` rather than a string to
//! compare; each id is a `uuid`.
//!
//! Here rather than in `domain/`, which knows nothing of sqlx. A name the
//! enum does not know (a row written by a newer version) is a decode error
//! naming the value, not a silent default.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
use sqlx::{Decode, Encode, Postgres, Type};

use uuid::Uuid;

use crate::domain::{
    ActivityId, ActivityStatus, ActivityType, AttributeStatus, Channel, CommerceId, CommerceUserId, EventType,
    LockReason, ResolutionStrategy, ResolverType, TargetStatus, TenantId,
};
use crate::policy::EngineKind;

macro_rules! text_enum {
    ($($name:ty),+ $(,)?) => {$(
        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <&str as Type<Postgres>>::type_info()
            }
            fn compatible(ty: &PgTypeInfo) -> bool {
                <&str as Type<Postgres>>::compatible(ty)
            }
        }

        impl PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <&str as PgHasArrayType>::array_type_info()
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                let text = <&str as Decode<Postgres>>::decode(value)?;
                <$name>::from_wire(text)
                    .ok_or_else(|| format!("unknown {} '{text}' in the database", stringify!($name)).into())
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as Encode<Postgres>>::encode(self.as_str(), buf)
            }
        }
    )+};
}

/// Parsing from the stored name, for every enum the macro covers.
trait FromWire: Sized {
    fn from_wire(text: &str) -> Option<Self>;
}

macro_rules! from_wire_by_parse {
    ($($name:ty),+ $(,)?) => {$(
        impl FromWire for $name {
            fn from_wire(text: &str) -> Option<Self> {
                <$name>::parse(text)
            }
        }
    )+};
}

from_wire_by_parse!(
    ActivityType,
    Channel,
    ActivityStatus,
    TargetStatus,
    LockReason,
    ResolutionStrategy,
    AttributeStatus,
    ResolverType,
    EventType,
);

impl FromWire for EngineKind {
    fn from_wire(text: &str) -> Option<Self> {
        match text {
            "RHAI" => Some(EngineKind::Rhai),
            "WASM" => Some(EngineKind::Wasm),
            _ => None,
        }
    }
}

text_enum!(
    ActivityType,
    Channel,
    ActivityStatus,
    TargetStatus,
    LockReason,
    ResolutionStrategy,
    AttributeStatus,
    ResolverType,
    EventType,
    EngineKind,
);

macro_rules! uuid_id {
    ($($name:ident),+ $(,)?) => {$(
        impl Type<Postgres> for $name {
            fn type_info() -> PgTypeInfo {
                <Uuid as Type<Postgres>>::type_info()
            }
        }

        impl PgHasArrayType for $name {
            fn array_type_info() -> PgTypeInfo {
                <Uuid as PgHasArrayType>::array_type_info()
            }
        }

        impl<'r> Decode<'r, Postgres> for $name {
            fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
                <Uuid as Decode<Postgres>>::decode(value).map($name)
            }
        }

        impl Encode<'_, Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <Uuid as Encode<Postgres>>::encode_by_ref(&self.0, buf)
            }
        }
    )+};
}

uuid_id!(TenantId, CommerceId, CommerceUserId, ActivityId);

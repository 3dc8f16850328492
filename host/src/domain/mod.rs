//! The product's vocabulary: ids, enums and the values parsed at the edge.
//!
//! Nothing here knows about axum or sqlx. A value of one of these types has
//! already been validated, so inner code trusts it.

pub mod activity;
pub mod commerce;
pub mod revision;
pub mod time;
pub mod validation;

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A fresh id for a row the service writes: time-ordered (UUIDv7: the
/// millisecond, then random bits; ordered within the process), so the rows
/// land at the right edge of the indexes on their ids, not on random leaf
/// pages. Statements that make their own ids use `reten_uuid_v7()` (a
/// migration), the same in SQL. Values that must be unpredictable (secrets,
/// lease owners) are not ids: they stay `Uuid::new_v4`.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh id ([`new_id`]: time-ordered).
            pub fn new() -> Self {
                Self(new_id())
            }

            /// Parses a textual UUID.
            pub fn parse(raw: &str) -> Result<Self, uuid::Error> {
                Uuid::parse_str(raw).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(raw: &str) -> Result<Self, uuid::Error> {
                Self::parse(raw)
            }
        }
    };
}

id_type!(
    /// A tenant: one customer of the platform, isolated from every other.
    TenantId
);
id_type!(
    /// A commerce (a shop that buys from the tenant).
    CommerceId
);
id_type!(
    /// A person at a commerce: a candidate target of an activity.
    CommerceUserId
);
id_type!(
    /// An activity (a task or a message).
    ActivityId
);

/// Defines a closed set of `SCREAMING_SNAKE_CASE` names, with parsing that
/// reports the allowed values.
macro_rules! string_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:tt),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Parses the wire name (exact, case-sensitive).
            pub fn parse(raw: &str) -> Option<Self> {
                match raw {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// "A, B or C", for error messages.
            pub fn expected() -> String {
                crate::domain::one_of(Self::ALL.iter().map(|v| v.as_str()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(raw: &str) -> Result<Self, String> {
                Self::parse(raw).ok_or_else(|| format!("must be one of {}", Self::expected()))
            }
        }
    };
}

// After `string_enum!`, which it uses.
pub mod result;

/// Joins names as "A, B or C".
pub fn one_of<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

string_enum!(
    /// What kind of work an activity is.
    ActivityType {
        Task => "TASK",
        Message => "MESSAGE",
    }
);

string_enum!(
    /// How an activity reaches the commerce.
    Channel {
        Salesman => "SALESMAN",
        Callcenter => "CALLCENTER",
        Whatsapp => "WHATSAPP",
        Email => "EMAIL",
        Sms => "SMS",
        Push => "PUSH",
    }
);

string_enum!(
    /// The lifecycle state of an activity.
    ActivityStatus {
        /// Created and waiting for dispatch.
        Ready => "READY",
        /// Created, but a target or attribute could not be resolved.
        Unresolved => "UNRESOLVED",
        Dispatched => "DISPATCHED",
        Completed => "COMPLETED",
        Canceled => "CANCELED",
        Failed => "FAILED",
    }
);

string_enum!(
    /// A role a commerce user holds.
    UserRole {
        Owner => "OWNER",
        Orders => "ORDERS",
        Finance => "FINANCE",
        Attention => "ATTENTION",
        Admin => "ADMIN",
        CommerceRep => "COMMERCE_REP",
        Other => "OTHER",
    }
);

string_enum!(
    /// The kind of a contact point.
    ContactType {
        Phone => "PHONE",
        Email => "EMAIL",
        Whatsapp => "WHATSAPP",
        Other => "OTHER",
    }
);

string_enum!(
    /// Where a target user's resolution stands.
    TargetStatus {
        /// Not resolved yet: ON_DISPATCH or MANUAL strategy, or awaiting a retry.
        Pending => "PENDING",
        Resolved => "RESOLVED",
        /// Resolved and locked: it can no longer change.
        Locked => "LOCKED",
        /// Resolution ran and found nobody.
        Failed => "FAILED",
    }
);

string_enum!(
    /// Why a target user holds the commerce user it holds.
    LockReason {
        CriteriaMatch => "CRITERIA_MATCH",
        FallbackCommerceRep => "FALLBACK_COMMERCE_REP",
        FallbackOwner => "FALLBACK_OWNER",
        ManualAssignment => "MANUAL_ASSIGNMENT",
    }
);

string_enum!(
    /// When target users are resolved.
    ResolutionStrategy {
        OnCreation => "ON_CREATION",
        OnDispatch => "ON_DISPATCH",
        Manual => "MANUAL",
    }
);

string_enum!(
    /// When and how an attribute key is resolved.
    AttributeStrategy {
        /// A policy computes the value while the activity is created.
        Upfront => "UPFRONT",
        /// Resolved later, by the dispatcher.
        OnDispatch => "ON_DISPATCH",
        /// The caller must send the value.
        CallerProvided => "CALLER_PROVIDED",
    }
);

string_enum!(
    /// Where an attribute's state stands.
    AttributeStatus {
        Pending => "PENDING",
        Resolved => "RESOLVED",
        Failed => "FAILED",
        /// A fallback value stands in for a value that could not be resolved.
        Fallback => "FALLBACK",
    }
);

string_enum!(
    /// Who produced an attribute's value.
    ResolverType {
        /// A platform policy (from `policies/global/`).
        InternalService => "INTERNAL_SERVICE",
        /// The tenant's own policy (from `policies/tenants/<id>/`).
        ClientHook => "CLIENT_HOOK",
        /// The caller, in the request's `attributes`.
        CallerProvided => "CALLER_PROVIDED",
    }
);

string_enum!(
    /// The kind of an activity status event.
    EventType {
        Created => "CREATED",
        ResolutionRetrySuccess => "RESOLUTION_RETRY_SUCCESS",
        ResolutionRetryFailed => "RESOLUTION_RETRY_FAILED",
        TargetUserResolved => "TARGET_USER_RESOLVED",
        Canceled => "CANCELED",
        DispatchSuccess => "DISPATCH_SUCCESS",
        /// A send that was not answered 2xx; another follows after a backoff.
        DispatchAttemptFailed => "DISPATCH_ATTEMPT_FAILED",
        /// The last attempt failed: the activity is FAILED.
        DispatchFailed => "DISPATCH_FAILED",
        /// retry-dispatch put a FAILED activity back to READY.
        DispatchRetry => "DISPATCH_RETRY",
        /// An ON_DISPATCH target or attribute could not be resolved at dispatch.
        DispatchResolutionFailed => "DISPATCH_RESOLUTION_FAILED",
        /// A result moved the activity (or replaced an earlier one).
        ResultReceived => "RESULT_RECEIVED",
    }
);

string_enum!(
    /// A dispatch provider of the catalogue.
    ProviderCode {
        /// REST: `POST {base_url}/activities`, signed.
        Webhook => "WEBHOOK",
        /// Always succeeds, sends nothing: for development and demos.
        Mock => "MOCK",
    }
);

string_enum!(
    /// A platform role, granting a documented set of permissions.
    Role {
        SuperAdmin => "SUPER_ADMIN",
        Admin => "ADMIN",
        Fde => "FDE",
        Viewer => "VIEWER",
    }
);

string_enum!(
    /// A permission name, as documented.
    Permission {
        CreateUser => "CREATE_USER",
        ViewUsers => "VIEW_USERS",
        UpdateUser => "UPDATE_USER",
        DeleteUser => "DELETE_USER",
        ResetUserPassword => "RESET_USER_PASSWORD",
        CreateTenant => "CREATE_TENANT",
        ViewTenants => "VIEW_TENANTS",
        UpdateTenant => "UPDATE_TENANT",
        DeleteTenant => "DELETE_TENANT",
        ManageCommerces => "MANAGE_COMMERCES",
        SyncCommerces => "SYNC_COMMERCES",
        ManageOperators => "MANAGE_OPERATORS",
        SyncOperators => "SYNC_OPERATORS",
        ManageRoutes => "MANAGE_ROUTES",
        ViewActivities => "VIEW_ACTIVITIES",
        CreateActivity => "CREATE_ACTIVITY",
        CancelActivity => "CANCEL_ACTIVITY",
        ManageActivityConfig => "MANAGE_ACTIVITY_CONFIG",
        DispatchActivity => "DISPATCH_ACTIVITY",
        SubmitActivityResult => "SUBMIT_ACTIVITY_RESULT",
        ManageApiKeys => "MANAGE_API_KEYS",
    }
);

impl Role {
    /// The permissions the role grants. Higher roles include everything the
    /// lower ones have.
    pub fn permissions(self) -> &'static [Permission] {
        use Permission as P;
        const VIEWER: &[Permission] = &[P::ViewActivities];
        const FDE: &[Permission] = &[
            P::ViewUsers,
            P::ManageCommerces,
            P::ManageOperators,
            P::ManageRoutes,
            P::ViewActivities,
            P::CreateActivity,
            P::DispatchActivity,
            P::SubmitActivityResult,
        ];
        const ADMIN: &[Permission] = &[
            P::CreateUser,
            P::ViewUsers,
            P::UpdateUser,
            P::ResetUserPassword,
            P::ViewTenants,
            P::ManageCommerces,
            P::SyncCommerces,
            P::ManageOperators,
            P::SyncOperators,
            P::ManageRoutes,
            P::ViewActivities,
            P::CreateActivity,
            P::CancelActivity,
            P::ManageActivityConfig,
            P::DispatchActivity,
            P::SubmitActivityResult,
            P::ManageApiKeys,
        ];
        match self {
            Role::SuperAdmin => Permission::ALL,
            Role::Admin => ADMIN,
            Role::Fde => FDE,
            Role::Viewer => VIEWER,
        }
    }
}

/// A set of permissions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PermissionSet(u32);

impl PermissionSet {
    /// Adds one permission.
    pub fn insert(&mut self, p: Permission) {
        self.0 |= 1 << (p as u32);
    }

    /// Whether the set holds `p`.
    pub fn contains(self, p: Permission) -> bool {
        self.0 & (1 << (p as u32)) != 0
    }

    /// Whether every permission of `other` is in this set.
    pub fn includes(self, other: PermissionSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// The permissions, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL.iter().copied().filter(move |p| self.contains(*p))
    }
}

impl FromIterator<Permission> for PermissionSet {
    fn from_iter<I: IntoIterator<Item = Permission>>(iter: I) -> Self {
        let mut set = PermissionSet::default();
        for p in iter {
            set.insert(p);
        }
        set
    }
}

impl Channel {
    /// Whether a user with these contacts can be reached on this channel.
    /// SALESMAN and PUSH reach any active user.
    pub fn reaches(self, contacts: &[ContactType]) -> bool {
        let has = |t: ContactType| contacts.contains(&t);
        match self {
            Channel::Whatsapp => has(ContactType::Whatsapp) || has(ContactType::Phone),
            Channel::Sms | Channel::Callcenter => has(ContactType::Phone),
            Channel::Email => has(ContactType::Email),
            Channel::Salesman | Channel::Push => true,
        }
    }
}

/// The stable id of an attribute key of the catalogue: a UUID v5 of its name,
/// so every replica and every restart agree without a table.
pub fn attribute_key_id(key: &str) -> Uuid {
    const NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_7e0a_3c4d_4f2b_9a51_2d8e_0c7b_a913);
    Uuid::new_v5(&NAMESPACE, key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whatsapp_reaches_a_phone_but_email_does_not() {
        assert!(Channel::Whatsapp.reaches(&[ContactType::Phone]));
        assert!(!Channel::Email.reaches(&[ContactType::Phone]));
        assert!(Channel::Push.reaches(&[]));
    }

    #[test]
    fn enum_errors_list_every_allowed_value() {
        let err = "LETTER".parse::<ActivityType>().unwrap_err();
        assert_eq!(err, "must be one of TASK or MESSAGE");
    }

    #[test]
    fn an_admin_can_cancel_but_an_fde_cannot() {
        let admin: PermissionSet = Role::Admin.permissions().iter().copied().collect();
        let fde: PermissionSet = Role::Fde.permissions().iter().copied().collect();
        assert!(admin.contains(Permission::CancelActivity));
        assert!(!fde.contains(Permission::CancelActivity));
        assert!(admin.includes(fde));
    }

    #[test]
    fn dispatching_and_submitting_results_belong_to_super_admin_admin_and_fde_only() {
        for p in [Permission::DispatchActivity, Permission::SubmitActivityResult] {
            for role in [Role::SuperAdmin, Role::Admin, Role::Fde] {
                assert!(role.permissions().contains(&p), "{role} lacks {p}");
            }
            assert!(!Role::Viewer.permissions().contains(&p));
        }
    }

    #[test]
    fn attribute_key_ids_are_stable() {
        assert_eq!(attribute_key_id("commerce_info"), attribute_key_id("commerce_info"));
        assert_ne!(attribute_key_id("commerce_info"), attribute_key_id("promotions"));
    }
}

//! Who is calling: the permissions a token's roles and claims grant, or an
//! API key's, and the tenants the caller may act for.

use crate::api::ApiError;
use crate::domain::{Permission, PermissionSet, Role, TenantId};

use super::jwt::Claims;

/// Who is calling, and what they may do.
#[derive(Clone, Debug)]
pub struct Caller {
    pub sub: String,
    pub tenant_ids: Vec<TenantId>,
    pub permissions: PermissionSet,
    pub super_admin: bool,
    /// The API key the caller presented (its tenant and id), if it used one.
    pub api_key: Option<(TenantId, uuid::Uuid)>,
}

impl Caller {
    /// The caller a verified token stands for.
    pub(super) fn from_claims(claims: Claims) -> Self {
        let roles: Vec<Role> = claims.roles.iter().filter_map(|r| Role::parse(r)).collect();
        let permissions = roles
            .iter()
            .flat_map(|r| r.permissions().iter().copied())
            .chain(claims.permissions.iter().filter_map(|p| Permission::parse(p)))
            .collect();
        Self {
            sub: claims.sub,
            tenant_ids: claims.tenant_ids.into_iter().map(TenantId).collect(),
            permissions,
            super_admin: roles.contains(&Role::SuperAdmin),
            api_key: None,
        }
    }

    /// 403 unless the caller holds `p`.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        if self.permissions.contains(p) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("this operation requires the {p} permission")))
        }
    }

    /// Whether the caller may act for `tenant`.
    pub fn may_act_for(&self, tenant: TenantId) -> bool {
        self.super_admin || self.tenant_ids.contains(&tenant)
    }

    /// Whether the caller is an API key rather than a user's token.
    pub fn is_api_key(&self) -> bool {
        self.api_key.is_some()
    }

    /// How the caller is named as an author: the token's `sub`, or
    /// `api-key:<id>` for an API key.
    pub fn author(&self) -> String {
        match self.api_key {
            Some((_, id)) => format!("api-key:{id}"),
            None => self.sub.clone(),
        }
    }
}

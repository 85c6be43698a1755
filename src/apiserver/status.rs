//! API errors and their rendering as Kubernetes `Status` objects, with the same `reason`, `code`
//! and message wording as kube-apiserver so that kubectl and kube-rs react to them as they would
//! to the real server (kubectl prints `Error from server (NotFound): …`, kube-rs retries on 409).

use serde_json::{Value, json};

/// One field-level cause inside a `Status` (`details.causes[]`).
#[derive(Debug, Clone, PartialEq)]
pub struct StatusCause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// What the request names, for messages such as `servers.metal.sidero.dev "x" not found`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Target {
    /// `group` of the resource (empty for core).
    pub group: String,
    /// Plural resource name, e.g. `servers`.
    pub resource: String,
    /// Kind, e.g. `Server` (used by `Invalid` messages, which name the kind).
    pub kind: String,
    pub name: String,
}

impl Target {
    /// `servers.metal.sidero.dev` or `secrets` for the core group.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }

    fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{} \"{}\" not found", .0.group_resource(), .0.name)]
    NotFound(Box<Target>),
    #[error("{} \"{}\" already exists", .0.group_resource(), .0.name)]
    AlreadyExists(Box<Target>),
    #[error(
        "Operation cannot be fulfilled on {} \"{}\": {message}",
        .target.group_resource(), .target.name
    )]
    Conflict {
        target: Box<Target>,
        message: String,
    },
    /// Server-side apply conflicts: `details.causes` list the contested fields.
    #[error("{message}")]
    ApplyConflict {
        target: Box<Target>,
        message: String,
        causes: Vec<StatusCause>,
    },
    #[error("{}", invalid_message(.target, .causes))]
    Invalid {
        target: Box<Target>,
        causes: Vec<StatusCause>,
    },
    /// No such endpoint (unknown path, group, version or resource).
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("Request entity too large: limit is {0}")]
    TooLarge(usize),
    #[error("{0}")]
    Forbidden(String),
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Gone(String),
    /// A 422 whose message is not field-shaped (e.g. a failed JSON patch `test`).
    #[error("{0}")]
    Unprocessable(String),
    #[error("Internal error occurred: {0}")]
    Internal(String),
    #[error("the server is currently unable to handle the request: {0}")]
    Unavailable(String),
}

fn invalid_message(target: &Target, causes: &[StatusCause]) -> String {
    let described: Vec<String> = causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    let list = match described.as_slice() {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    };
    format!(
        "{} \"{}\" is invalid: {list}",
        target.group_kind(),
        target.name
    )
}

impl ApiError {
    /// HTTP status code, as kube-apiserver uses it.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute => 404,
            ApiError::AlreadyExists(_) | ApiError::Conflict { .. } => 409,
            ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::NotAcceptable(_) => 406,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::TooLarge(_) => 413,
            ApiError::Forbidden(_) => 403,
            ApiError::Unauthorized => 401,
            ApiError::Gone(_) => 410,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// `reason` field of the Status (metav1.StatusReason).
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound(_) | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists(_) => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } | ApiError::Unprocessable(_) => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::TooLarge(_) => "RequestEntityTooLarge",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Gone(_) => "Expired",
            ApiError::Internal(_) => "InternalError",
            ApiError::Unavailable(_) => "ServiceUnavailable",
        }
    }

    /// The `Status` object for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound(t) | ApiError::AlreadyExists(t) => Some(details(t, false, &[])),
            ApiError::Conflict { target, .. } => Some(details(target, false, &[])),
            ApiError::ApplyConflict { target, causes, .. } => Some(details(target, false, causes)),
            ApiError::Invalid { target, causes } => Some(details(target, true, causes)),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

fn details(target: &Target, by_kind: bool, causes: &[StatusCause]) -> Value {
    let mut d = json!({
        "name": target.name,
        "group": target.group,
        "kind": if by_kind { &target.kind } else { &target.resource },
    });
    if target.group.is_empty()
        && let Some(m) = d.as_object_mut()
    {
        m.remove("group");
    }
    if !causes.is_empty() {
        d["causes"] = causes
            .iter()
            .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
            .collect();
    }
    d
}

/// A `Status` reporting success (the answer to an immediate delete of a custom resource).
pub fn success(target: &Target, uid: &str) -> Value {
    let mut d = details(target, false, &[]);
    d["uid"] = Value::String(uid.to_owned());
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": d,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> Target {
        Target {
            group: "metal.sidero.dev".into(),
            resource: "servers".into(),
            kind: "Server".into(),
            name: name.into(),
        }
    }

    #[test]
    fn not_found_names_the_group_resource_like_kube_apiserver() {
        let e = ApiError::NotFound(Box::new(server("abc")));
        let s = e.to_status();
        assert_eq!(s["message"], "servers.metal.sidero.dev \"abc\" not found");
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["code"], 404);
        assert_eq!(s["details"]["kind"], "servers");
    }

    #[test]
    fn invalid_lists_causes_by_field_and_names_the_kind() {
        let cause = |f: &str| StatusCause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: \"x\"".into(),
            field: f.into(),
        };
        let one = ApiError::Invalid {
            target: Box::new(server("a")),
            causes: vec![cause("spec.accepted")],
        };
        assert_eq!(
            one.to_string(),
            "Server.metal.sidero.dev \"a\" is invalid: spec.accepted: Invalid value: \"x\""
        );
        let two = ApiError::Invalid {
            target: Box::new(server("a")),
            causes: vec![cause("spec.a"), cause("spec.b")],
        };
        assert!(
            two.to_string()
                .contains(": [spec.a: Invalid value: \"x\", spec.b:")
        );
        assert_eq!(two.to_status()["details"]["causes"][1]["field"], "spec.b");
        assert_eq!(two.code(), 422);
    }

    #[test]
    fn core_resources_have_no_group_in_messages() {
        let t = Target {
            resource: "secrets".into(),
            kind: "Secret".into(),
            name: "s".into(),
            ..Target::default()
        };
        assert_eq!(
            ApiError::AlreadyExists(Box::new(t.clone())).to_string(),
            "secrets \"s\" already exists"
        );
        assert!(
            ApiError::AlreadyExists(Box::new(t)).to_status()["details"]
                .get("group")
                .is_none()
        );
    }
}

//! The fake STS: it counts every AssumeRole, can be slowed down or made to
//! fail, and issues fixed credentials for the asked duration.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use ec2metaproxy::credentials::sts::{AssumeRole, Credentials, Secret, StsError};
use ec2metaproxy::credentials::{CredentialCache, RoleRequest, Timing};

use super::now;

pub const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
pub const SESSION_TOKEN: &str = "FwoGZXIvYXdzEXAMPLETOKEN";

/// Issues fixed credentials valid for the asked duration from its clock,
/// counting calls, or fails while `fail` is set.
pub struct FakeSts {
    /// When credentials are issued; the fixed test clock unless a test says otherwise.
    pub clock: Mutex<SystemTime>,
    /// Every AssumeRole asked, in order.
    pub calls: Mutex<Vec<RoleRequest>>,
    pub fail: Mutex<bool>,
    /// How long each call takes (tokio time: a paused clock skips it).
    pub delay: Mutex<Duration>,
}

impl FakeSts {
    /// How many AssumeRole calls were made.
    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

#[async_trait]
impl AssumeRole for FakeSts {
    async fn assume_role(
        &self,
        request: &RoleRequest,
        duration: Duration,
    ) -> Result<Credentials, StsError> {
        self.calls.lock().unwrap().push(request.clone());
        let delay = *self.delay.lock().unwrap();
        let issued = *self.clock.lock().unwrap();
        tokio::time::sleep(delay).await;
        if *self.fail.lock().unwrap() {
            return Err(StsError {
                role_arn: request.role_arn.to_string(),
                session_name: request.session_name.to_string(),
                code: "AccessDenied".into(),
                message: "internal detail the caller must not see".into(),
            });
        }
        Ok(Credentials {
            access_key_id: "ASIAEXAMPLE".into(),
            secret_access_key: Secret::new(SECRET),
            session_token: Secret::new(SESSION_TOKEN),
            expiration: issued + duration,
            last_updated: issued,
            rendered: Default::default(),
        })
    }
}

impl Default for FakeSts {
    fn default() -> FakeSts {
        FakeSts {
            clock: Mutex::new(now()),
            calls: Mutex::default(),
            fail: Mutex::default(),
            delay: Mutex::default(),
        }
    }
}

/// A credential cache in front of `sts`, for one-hour sessions.
pub fn cache(sts: Arc<FakeSts>) -> Arc<CredentialCache> {
    Arc::new(CredentialCache::new(
        sts,
        Timing::for_duration(Duration::from_secs(3600)),
    ))
}

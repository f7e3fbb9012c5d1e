//! A plausible metadata tree for hosts with no metadata service (a laptop, a
//! CI runner): `"metadataURL": null`. SDKs that look for a region or an
//! instance identity find one; any other path is 404 at once, never a hang.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use serde::{Deserialize, Serialize};

use super::document;

/// The values of the synthesised tree. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMetadata {
    pub region: String,
    pub availability_zone: String,
    pub instance_id: String,
    pub instance_type: String,
    pub ami_id: String,
    pub local_ipv4: String,
    pub hostname: String,
    pub account_id: String,
}

/// The operator's values for the tree (the config's `localMetadata`
/// object, which embeds this type as its schema); each one left out keeps
/// its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Overrides {
    pub region: Option<String>,
    pub availability_zone: Option<String>,
    pub instance_id: Option<String>,
    pub instance_type: Option<String>,
    pub ami_id: Option<String>,
    pub local_ipv4: Option<String>,
    pub hostname: Option<String>,
    pub account_id: Option<String>,
}

impl LocalMetadata {
    /// Defaults for `region` and `account_id`; the rest are fixed placeholders.
    pub fn with_defaults(region: &str, account_id: &str) -> LocalMetadata {
        LocalMetadata {
            region: region.to_string(),
            availability_zone: format!("{region}a"),
            instance_id: "i-0123456789abcdef0".into(),
            instance_type: "t3.micro".into(),
            ami_id: "ami-0123456789abcdef0".into(),
            local_ipv4: "127.0.0.1".into(),
            hostname: "localhost".into(),
            account_id: account_id.to_string(),
        }
    }

    /// The defaults with `overrides` applied. A region given without a
    /// zone gets a zone in that region.
    pub fn new(region: &str, account_id: &str, overrides: &Overrides) -> LocalMetadata {
        let region = overrides.region.as_deref().unwrap_or(region);
        let defaults = LocalMetadata::with_defaults(region, account_id);
        let pick = |value: &Option<String>, default: String| value.clone().unwrap_or(default);
        LocalMetadata {
            availability_zone: pick(&overrides.availability_zone, defaults.availability_zone),
            instance_id: pick(&overrides.instance_id, defaults.instance_id),
            instance_type: pick(&overrides.instance_type, defaults.instance_type),
            ami_id: pick(&overrides.ami_id, defaults.ami_id),
            local_ipv4: pick(&overrides.local_ipv4, defaults.local_ipv4),
            hostname: pick(&overrides.hostname, defaults.hostname),
            account_id: pick(&overrides.account_id, defaults.account_id),
            region: defaults.region,
        }
    }

    /// Path (after the API version, without slashes at either end) -> body.
    fn leaves(&self, now: SystemTime) -> BTreeMap<String, String> {
        let identity = serde_json::json!({
            "accountId": self.account_id,
            "architecture": "x86_64",
            "availabilityZone": self.availability_zone,
            "billingProducts": null,
            "devpayProductCodes": null,
            "marketplaceProductCodes": null,
            "imageId": self.ami_id,
            "instanceId": self.instance_id,
            "instanceType": self.instance_type,
            "kernelId": null,
            "pendingTime": crate::time::timestamp(now),
            "privateIp": self.local_ipv4,
            "ramdiskId": null,
            "region": self.region,
            "version": "2017-09-30",
        });
        [
            ("meta-data/ami-id", self.ami_id.clone()),
            ("meta-data/hostname", self.hostname.clone()),
            ("meta-data/instance-id", self.instance_id.clone()),
            ("meta-data/instance-type", self.instance_type.clone()),
            ("meta-data/local-hostname", self.hostname.clone()),
            ("meta-data/local-ipv4", self.local_ipv4.clone()),
            (
                "meta-data/placement/availability-zone",
                self.availability_zone.clone(),
            ),
            ("meta-data/placement/region", self.region.clone()),
            (
                "dynamic/instance-identity/document",
                format!("{identity:#}"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Answers `segments` (after the version): a leaf or a directory
    /// listing; `None` when the tree has nothing there (a 404).
    pub fn answer(&self, segments: &[&str], now: SystemTime) -> Option<Response<Full<Bytes>>> {
        let path = segments.join("/");
        let leaves = self.leaves(now);
        if let Some(body) = leaves.get(&path) {
            return Some(document::text(body.clone()));
        }
        // A directory: list its children, directories with a trailing slash.
        let prefix = if path.is_empty() {
            String::new()
        } else {
            format!("{path}/")
        };
        let mut children: Vec<String> = leaves
            .keys()
            .filter_map(|leaf| leaf.strip_prefix(&prefix))
            .map(|rest| match rest.split_once('/') {
                Some((dir, _)) => format!("{dir}/"),
                None => rest.to_string(),
            })
            .collect();
        if path == "meta-data" {
            children.push("iam/".into());
        }
        children.sort();
        children.dedup();
        (!children.is_empty()).then(|| document::text(children.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn get(local: &LocalMetadata, path: &str) -> (u16, String) {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let Some(response) = local.answer(&segments, SystemTime::UNIX_EPOCH) else {
            return (404, String::new());
        };
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn region_and_identity_document_come_from_config() {
        let overrides = Overrides {
            region: Some("eu-west-1".into()),
            instance_id: Some("i-dev".into()),
            ..Overrides::default()
        };
        let local = LocalMetadata::new("us-east-1", "123456789012", &overrides);
        assert_eq!(
            get(&local, "meta-data/placement/region").await,
            (200, "eu-west-1".into())
        );
        assert_eq!(
            get(&local, "meta-data/placement/availability-zone").await,
            (200, "eu-west-1a".into())
        );
        let (status, body) = get(&local, "dynamic/instance-identity/document").await;
        assert_eq!(status, 200);
        let document: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(document["region"], "eu-west-1");
        assert_eq!(document["accountId"], "123456789012");
        assert_eq!(document["instanceId"], "i-dev");
    }

    #[tokio::test]
    async fn directories_list_their_children_and_unknown_paths_are_404() {
        let local = LocalMetadata::with_defaults("us-east-1", "123456789012");
        assert_eq!(
            get(&local, "meta-data/placement").await,
            (200, "availability-zone\nregion".into())
        );
        let (_, listing) = get(&local, "meta-data").await;
        assert!(
            listing.contains("iam/\n") && listing.contains("placement/"),
            "{listing}"
        );
        assert_eq!(get(&local, "meta-data/nothing-here").await.0, 404);
        assert_eq!(get(&local, "user-data").await.0, 404);
    }
}

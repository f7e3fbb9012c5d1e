//! A plausible metadata tree for hosts with no metadata service (a laptop, a
//! CI runner): `"metadataURL": null`. SDKs that look for a region or an
//! instance identity find one; any other path is 404 at once, never a hang.

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::Value;

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

    /// Applies the config's `localMetadata` object over the defaults.
    /// Unknown keys and non-string values are refused with the key named.
    pub fn apply(&mut self, overrides: &serde_json::Map<String, Value>) -> Result<(), String> {
        for (key, value) in overrides {
            let Some(text) = value.as_str() else {
                return Err(format!("\"{key}\" must be a string"));
            };
            let field = match key.as_str() {
                "region" => &mut self.region,
                "availabilityZone" => &mut self.availability_zone,
                "instanceId" => &mut self.instance_id,
                "instanceType" => &mut self.instance_type,
                "amiId" => &mut self.ami_id,
                "localIpv4" => &mut self.local_ipv4,
                "hostname" => &mut self.hostname,
                "accountId" => &mut self.account_id,
                other => {
                    return Err(format!(
                        "unknown key \"{other}\" (known: region, availabilityZone, instanceId, instanceType, amiId, localIpv4, hostname, accountId)"
                    ))
                }
            };
            *field = text.to_string();
        }
        // A region given without a zone gets a zone in that region.
        if overrides.contains_key("region") && !overrides.contains_key("availabilityZone") {
            self.availability_zone = format!("{}a", self.region);
        }
        Ok(())
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
                serde_json::to_string_pretty(&identity).expect("serialisable"),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Answers `segments` (after the version): a leaf, a directory listing,
    /// or 404.
    pub fn answer(&self, segments: &[&str], now: SystemTime) -> Response<Full<Bytes>> {
        let path = segments.join("/");
        let leaves = self.leaves(now);
        if let Some(body) = leaves.get(&path) {
            return document::text(body.clone());
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
        if children.is_empty() {
            document::status_page(StatusCode::NOT_FOUND)
        } else {
            document::text(children.join("\n"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn get(local: &LocalMetadata, path: &str) -> (u16, String) {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let response = local.answer(&segments, SystemTime::UNIX_EPOCH);
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn region_and_identity_document_come_from_config() {
        let mut local = LocalMetadata::with_defaults("us-east-1", "123456789012");
        let overrides = serde_json::json!({"region": "eu-west-1", "instanceId": "i-dev"});
        local.apply(overrides.as_object().unwrap()).unwrap();
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
        let document: Value = serde_json::from_str(&body).unwrap();
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

    #[test]
    fn unknown_override_keys_are_refused() {
        let mut local = LocalMetadata::with_defaults("us-east-1", "1");
        let bad = serde_json::json!({"regoin": "x"});
        assert!(local
            .apply(bad.as_object().unwrap())
            .unwrap_err()
            .starts_with("unknown key \"regoin\""));
    }
}

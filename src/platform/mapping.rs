//! Static IP -> alias mappings (`roleMappingFile`), for hosts that run
//! containers without Docker's networking. The file is a JSON object,
//! `{"10.0.0.5": "web"}`; it is validated whole and swapped in only when
//! valid, like the config.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::container::{Container, StringMap, ROLE_ALIAS_LABEL};

type ByIp = crate::FastHashMap<IpAddr, Arc<Container>>;

/// The current mappings, each as a stand-in container labelled with its alias.
pub struct StaticMappings {
    by_ip: ArcSwap<ByIp>,
}

/// Parses a mapping file's text; `name` stands for the file in messages.
pub fn parse(text: &str, name: &str) -> Result<ByIp, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "{name}: line {}, column {}: invalid JSON: {e}",
            e.line(),
            e.column()
        )
    })?;
    let Some(entries) = value.as_object() else {
        return Err(format!("{name}: expected an object of IP address to alias"));
    };
    let mut by_ip = ByIp::with_capacity_and_hasher(entries.len(), Default::default());
    for (address, alias) in entries {
        let ip: IpAddr = address
            .parse()
            .map_err(|_| format!("{name}: key \"{address}\": not an IP address"))?;
        let Some(alias) = alias.as_str().filter(|a| !a.is_empty()) else {
            return Err(format!(
                "{name}: key \"{address}\": expected an alias string, found {alias}"
            ));
        };
        // A name that reads well in CloudTrail: ip-10-0-0-5.
        let stand_in = format!("ip-{}", address.replace([':', '.'], "-"));
        let labels = StringMap::from_iter([(ROLE_ALIAS_LABEL.to_string(), alias.to_string())]);
        by_ip.insert(
            ip,
            Arc::new(Container::new(String::new(), &stand_in, labels, vec![ip])),
        );
    }
    Ok(by_ip)
}

impl StaticMappings {
    pub fn load(path: &Path) -> Result<StaticMappings, String> {
        Ok(StaticMappings {
            by_ip: ArcSwap::from_pointee(read(path)?),
        })
    }

    pub fn get(&self, ip: IpAddr) -> Option<Arc<Container>> {
        self.by_ip.load().get(&ip).cloned()
    }

    /// Re-reads `path`; an invalid file is refused and the old mappings stay.
    pub fn reload(&self, path: &Path) {
        match read(path) {
            Ok(by_ip) => {
                log::info!(
                    "role mappings reloaded from {}: {} addresses",
                    path.display(),
                    by_ip.len()
                );
                self.by_ip.store(Arc::new(by_ip));
            }
            Err(error) => {
                log::error!("role mapping reload refused, keeping the previous mappings: {error}")
            }
        }
    }
}

fn read(path: &Path) -> Result<ByIp, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read role mapping file {}: {e}", path.display()))?;
    parse(&text, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_map_to_stand_in_containers_with_the_alias_label() {
        let by_ip = parse(r#"{"10.0.0.5": "web", "fd00::5": "batch"}"#, "m.json").unwrap();
        let web = &by_ip[&"10.0.0.5".parse::<IpAddr>().unwrap()];
        assert_eq!(web.labels[ROLE_ALIAS_LABEL], "web");
        assert_eq!(&*web.session_name, "ip-10-0-0-5");
        assert_eq!(by_ip.len(), 2);
    }

    #[test]
    fn bad_files_name_the_problem() {
        assert_eq!(
            parse(r#"{"10.0.0.300": "web"}"#, "m.json").unwrap_err(),
            "m.json: key \"10.0.0.300\": not an IP address"
        );
        assert_eq!(
            parse(r#"{"10.0.0.5": 7}"#, "m.json").unwrap_err(),
            "m.json: key \"10.0.0.5\": expected an alias string, found 7"
        );
        assert!(parse("[", "m.json")
            .unwrap_err()
            .starts_with("m.json: line 1, column 1: invalid JSON"));
    }

    #[test]
    fn an_invalid_reload_keeps_the_previous_mappings() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        std::fs::write(&path, r#"{"10.0.0.5": "web"}"#).unwrap();
        let mappings = StaticMappings::load(&path).unwrap();
        std::fs::write(&path, r#"{"10.0.0.5": "#).unwrap();
        mappings.reload(&path);
        assert!(mappings.get("10.0.0.5".parse().unwrap()).is_some());
        std::fs::write(&path, r#"{"10.0.0.6": "web"}"#).unwrap();
        mappings.reload(&path);
        assert!(mappings.get("10.0.0.5".parse().unwrap()).is_none());
        assert!(mappings.get("10.0.0.6".parse().unwrap()).is_some());
    }
}

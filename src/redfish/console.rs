//! Which serial console a BMC offers, from what Redfish says about it: a
//! ComputerSystem's `SerialConsole` (`SSH` and `IPMI` blocks, each with
//! `ServiceEnabled`, `Port`, `SharedWithManagerCLI`, `ConsoleEntryCommand`;
//! Redfish 2020.4 and later) names the system's own console, so it wins;
//! a Manager's `SerialConsole`, else `CommandShell`, only says which
//! protocols it speaks (`ConnectTypesSupported`).
//!
//! SSH is preferred over IPMI where both are offered: it is encrypted with
//! a host key that can be pinned, and it needs no helper program. Pure:
//! the crawl keeps the raw blocks, this reads them when a console is set up.

use serde_json::Value;

use super::json::{get, str_of};

/// A console protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleProtocol {
    Ssh,
    Ipmi,
}

/// What a BMC offers for its system's console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleOffer {
    pub protocol: ConsoleProtocol,
    /// `None`: the BMC did not say (the protocol's usual port applies).
    pub port: Option<u16>,
    /// Run after logging in (the console is reached through the manager's
    /// command line, `SharedWithManagerCLI`); `None`: the session is the
    /// console.
    pub command: Option<String>,
}

fn enabled(block: &Value) -> bool {
    // Absent means "not said"; only an explicit false turns a block off.
    get(block, "ServiceEnabled").and_then(Value::as_bool) != Some(false)
}

fn port(block: &Value) -> Option<u16> {
    get(block, "Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

/// A ComputerSystem's `SerialConsole` block for `protocol` (`"SSH"`,
/// `"IPMI"`), when enabled.
fn system_block(
    serial_console: &Value,
    key: &str,
    protocol: ConsoleProtocol,
) -> Option<ConsoleOffer> {
    let b = get(serial_console, key).filter(|b| b.is_object())?;
    if !enabled(b) {
        return None;
    }
    let shared = get(b, "SharedWithManagerCLI").and_then(Value::as_bool) == Some(true);
    let entry = str_of(b, "ConsoleEntryCommand").trim();
    Some(ConsoleOffer {
        protocol,
        port: port(b),
        command: (protocol == ConsoleProtocol::Ssh && shared && !entry.is_empty())
            .then(|| entry.to_string()),
    })
}

/// A Manager's `SerialConsole` or `CommandShell`: enabled and speaking
/// `protocol` (`ConnectTypesSupported`).
fn manager_speaks(block: &Value, name: &str) -> bool {
    block.is_object()
        && get(block, "ServiceEnabled").and_then(Value::as_bool) == Some(true)
        && get(block, "ConnectTypesSupported")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .any(|t| t.eq_ignore_ascii_case(name))
            })
}

/// The console to use, from the systems' `SerialConsole` blocks and the
/// managers' `SerialConsole` and `CommandShell` blocks (raw, as crawled);
/// `None` when nothing is offered.
pub fn console_offer<'a>(
    system_consoles: impl IntoIterator<Item = &'a Value> + Clone,
    manager_blocks: impl IntoIterator<Item = (&'a Value, &'a Value)> + Clone,
) -> Option<ConsoleOffer> {
    for (key, protocol) in [
        ("SSH", ConsoleProtocol::Ssh),
        ("IPMI", ConsoleProtocol::Ipmi),
    ] {
        if let Some(o) = system_consoles
            .clone()
            .into_iter()
            .find_map(|sc| system_block(sc, key, protocol))
        {
            return Some(o);
        }
    }
    for (name, protocol) in [
        ("SSH", ConsoleProtocol::Ssh),
        ("IPMI", ConsoleProtocol::Ipmi),
    ] {
        let offered = manager_blocks.clone().into_iter().any(|(serial, shell)| {
            manager_speaks(serial, name)
                || (protocol == ConsoleProtocol::Ssh && manager_speaks(shell, name))
        });
        if offered {
            return Some(ConsoleOffer {
                protocol,
                port: None,
                command: None,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn offers_by_preference() {
        let null = Value::Null;
        let table: Vec<(&str, Value, Value, Value, Option<ConsoleOffer>)> = vec![
            (
                "nothing said",
                null.clone(),
                null.clone(),
                null.clone(),
                None,
            ),
            (
                "system SSH on its own port",
                json!({"SSH": {"ServiceEnabled": true, "Port": 2200, "SharedWithManagerCLI": false}}),
                null.clone(),
                null.clone(),
                Some(ConsoleOffer {
                    protocol: ConsoleProtocol::Ssh,
                    port: Some(2200),
                    command: None,
                }),
            ),
            (
                "system SSH through the manager's CLI",
                json!({"SSH": {"ServiceEnabled": true, "Port": 22, "SharedWithManagerCLI": true,
                               "ConsoleEntryCommand": "console com2"},
                       "IPMI": {"ServiceEnabled": true, "Port": 623}}),
                null.clone(),
                null.clone(),
                Some(ConsoleOffer {
                    protocol: ConsoleProtocol::Ssh,
                    port: Some(22),
                    command: Some("console com2".into()),
                }),
            ),
            (
                "SSH disabled, IPMI enabled",
                json!({"SSH": {"ServiceEnabled": false, "Port": 22},
                       "IPMI": {"ServiceEnabled": true, "Port": 623}}),
                json!({"ServiceEnabled": true, "ConnectTypesSupported": ["SSH"]}),
                null.clone(),
                Some(ConsoleOffer {
                    protocol: ConsoleProtocol::Ipmi,
                    port: Some(623),
                    command: None,
                }),
            ),
            (
                "manager's serial console over IPMI only",
                null.clone(),
                json!({"ServiceEnabled": true, "ConnectTypesSupported": ["IPMI", "Telnet"]}),
                json!({"ServiceEnabled": false, "ConnectTypesSupported": ["SSH"]}),
                Some(ConsoleOffer {
                    protocol: ConsoleProtocol::Ipmi,
                    port: None,
                    command: None,
                }),
            ),
            (
                "manager's command shell over SSH",
                json!("garbled"),
                json!({"ServiceEnabled": true, "ConnectTypesSupported": ["IPMI"]}),
                json!({"ServiceEnabled": true, "ConnectTypesSupported": ["ssh"]}),
                Some(ConsoleOffer {
                    protocol: ConsoleProtocol::Ssh,
                    port: None,
                    command: None,
                }),
            ),
            (
                "odd shapes: a block not switched off counts, a bad port is dropped",
                json!({"SSH": "yes", "IPMI": {"ServiceEnabled": "true", "Port": 70000}}),
                json!({"ServiceEnabled": "true", "ConnectTypesSupported": "SSH"}),
                json!([]),
                Some(ConsoleOffer {
                    protocol: ConsoleProtocol::Ipmi,
                    port: None,
                    command: None,
                }),
            ),
        ];
        for (what, system, serial, shell, want) in table {
            let got = console_offer([&system], [(&serial, &shell)]);
            assert_eq!(got, want, "{what}");
        }
    }
}

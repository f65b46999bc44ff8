//! A System's power limits, read and set through what its chassis offers:
//! the `Controls` collection (`ControlType: Power`: `SetPoint`, with the
//! range as `AllowableMin`/`AllowableMax`, or the older
//! `SettingRangeMin`/`SettingRangeMax`) and, when that has no power
//! control, the legacy `Power` resource (`PowerControl[n].PowerLimit
//! .LimitInWatts`, the range under a vendor's `Oem.*.PowerLimit` or, for
//! the maximum, `PowerCapacityWatts`). Read live, never from the crawl: a
//! limit changes under the appliance's feet (another tool, the BMC's own
//! policy).

use futures_util::future::try_join_all;
use serde_json::{Value, json};

use super::client::Bmc;
use super::error::{Error, ErrorKind};
use super::json::{at, clean, get, link, members, str_of};

/// Where a limit is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitAt {
    /// A `Control` resource (PATCH `SetPoint` / `ControlMode`).
    Control(String),
    /// Member `index` of the `PowerControl` array of a `Power` resource.
    PowerControl {
        power: String,
        index: usize,
        count: usize,
    },
}

/// One power limit a BMC offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PowerLimit {
    /// As PCS names controls: the control's `Name`.
    pub name: String,
    pub at: LimitAt,
    /// The limit in force; `None`: no limit.
    pub current: Option<i64>,
    pub min: Option<i64>,
    pub max: Option<i64>,
    /// `Chassis` for a whole-node limit.
    pub physical_context: String,
}

fn int(v: Option<&Value>) -> Option<i64> {
    v.and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f.round() as i64)))
}

/// A GET where `404` means "absent".
async fn get_opt(bmc: &Bmc, path: &str) -> Result<Option<Value>, Error> {
    if path.is_empty() {
        return Ok(None);
    }
    match bmc.get(path).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if matches!(e.kind, ErrorKind::Status(404, _)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The power limits of the chassis that holds System `system`: its
/// `Controls` of type Power, else its legacy `PowerControl`s. Empty: the
/// BMC offers none.
pub async fn power_limits(bmc: &Bmc, system: &str) -> Result<Vec<PowerLimit>, Error> {
    let sys = bmc.get(system).await?;
    let chassis: Vec<String> = at(&sys, &["Links", "Chassis"])
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|c| clean(str_of(c, "@odata.id")))
                .filter(|p| !p.is_empty())
                .collect()
        })
        .unwrap_or_default();
    for c in chassis {
        let Some(ch) = get_opt(bmc, &c).await? else {
            continue;
        };
        let found = controls(bmc, link(&ch, "Controls")).await?;
        if !found.is_empty() {
            return Ok(found);
        }
        let found = legacy(bmc, link(&ch, "Power")).await?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Ok(Vec::new())
}

async fn controls(bmc: &Bmc, path: &str) -> Result<Vec<PowerLimit>, Error> {
    let Some(col) = get_opt(bmc, &clean(path)).await? else {
        return Ok(Vec::new());
    };
    let docs =
        try_join_all(members(&col).into_iter().map(|p| async move {
            Ok::<_, Error>(get_opt(bmc, &p).await?.map(|v| (clean(&p), v)))
        }))
        .await?;
    Ok(docs
        .into_iter()
        .flatten()
        .filter(|(_, v)| str_of(v, "ControlType") == "Power")
        .map(|(p, v)| {
            let disabled = str_of(&v, "ControlMode") == "Disabled";
            let min = int(get(&v, "AllowableMin")).or_else(|| int(get(&v, "SettingRangeMin")));
            let max = int(get(&v, "AllowableMax")).or_else(|| int(get(&v, "SettingRangeMax")));
            let mut name = str_of(&v, "Name").to_string();
            if name.is_empty() {
                name = str_of(&v, "Id").to_string();
            }
            PowerLimit {
                name,
                at: LimitAt::Control(p),
                current: if disabled {
                    None
                } else {
                    int(get(&v, "SetPoint"))
                },
                min,
                max,
                physical_context: str_of(&v, "PhysicalContext").to_string(),
            }
        })
        .collect())
}

async fn legacy(bmc: &Bmc, path: &str) -> Result<Vec<PowerLimit>, Error> {
    let path = clean(path);
    let Some(power) = get_opt(bmc, &path).await? else {
        return Ok(Vec::new());
    };
    let Some(list) = get(&power, "PowerControl").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    let count = list.len();
    Ok(list
        .iter()
        .enumerate()
        .filter(|(_, pc)| get(pc, "PowerLimit").is_some())
        .map(|(index, pc)| {
            // A vendor's range: Oem.<vendor>.PowerLimit.{Min,Max}.
            let oem = get(pc, "Oem")
                .and_then(Value::as_object)
                .and_then(|o| o.values().find_map(|v| get(v, "PowerLimit")));
            let min = oem.and_then(|l| int(get(l, "Min")));
            let max = oem
                .and_then(|l| int(get(l, "Max")))
                .or_else(|| int(get(pc, "PowerCapacityWatts")));
            let mut name = str_of(pc, "Name").to_string();
            if name.is_empty() {
                name = format!("PowerControl {index}");
            }
            PowerLimit {
                name,
                at: LimitAt::PowerControl {
                    power: path.clone(),
                    index,
                    count,
                },
                current: at(pc, &["PowerLimit", "LimitInWatts"])
                    .and_then(|v| int(Some(v)))
                    .filter(|v| *v > 0),
                min,
                max,
                physical_context: "Chassis".into(),
            }
        })
        .collect())
}

/// Sets a limit; `None` (PCS's value 0) removes it.
pub async fn set_power_limit(bmc: &Bmc, at: &LimitAt, watts: Option<i64>) -> Result<(), Error> {
    match at {
        LimitAt::Control(path) => {
            let body = match watts {
                Some(w) => json!({"SetPoint": w, "ControlMode": "Automatic"}),
                None => json!({"ControlMode": "Disabled"}),
            };
            bmc.patch(path, &body).await.map(|_| ())
        }
        LimitAt::PowerControl {
            power,
            index,
            count,
        } => {
            let mut list = vec![json!({}); (*count).max(index + 1)];
            list[*index] = json!({"PowerLimit": {"LimitInWatts": watts}});
            bmc.patch(power, &json!({ "PowerControl": list }))
                .await
                .map(|_| ())
        }
    }
}

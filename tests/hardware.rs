//! SMD's hardware inventory: discovery against simulated BMCs with full
//! hardware trees (CPUs, DIMMs, GPUs, drives, PCIe devices, power
//! supplies), FRUs moved between nodes, a BMC withholding a collection, and
//! upstream's `Inventory/Hardware*` API behaviour as a table of requests.
//! Everything runs on loopback in this process.

mod common;

use std::time::Duration;

use common::Harness;
use openchami::redfish::sim::{SimBmcs, SimConfig};
use openchami::redfish::sim_hardware::{Collection, HardwareConfig, Slot, Unit};
use serde_json::{Value, json};

async fn sims(count: usize) -> SimBmcs {
    let mut c = SimConfig::loopback(count);
    c.hardware = Some(HardwareConfig::default());
    SimBmcs::start(c, None).await.expect("simulated BMCs")
}

/// Collects every sim (BMC `k` named `x1000c0s{k}b0` by an ID map, as they
/// share 127.0.0.1).
async fn collect(h: &Harness, s: &SimBmcs) -> Value {
    h.api
        .put(
            "/discovery/v1/credentials/default",
            &json!({"username": "admin", "password": "password"}),
        )
        .await
        .ok();
    let addrs: Vec<String> = s.addrs().iter().map(|a| a.to_string()).collect();
    let map: serde_json::Map<String, Value> = addrs
        .iter()
        .enumerate()
        .map(|(k, a)| (a.clone(), json!(format!("x1000c0s{k}b0"))))
        .collect();
    let job = h
        .api
        .post(
            "/discovery/v1/collect",
            &json!({"targets": addrs, "bmc_id_map": {"map_key": "bmc-ip-addr", "id_map": map}}),
        )
        .await
        .status(202)
        .json();
    h.wait_job(&job, Duration::from_secs(120)).await
}

fn count_types(list: &Value) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for l in list.as_array().expect("an array") {
        *m.entry(l["Type"].as_str().expect("a Type").to_string())
            .or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_fills_the_hardware_inventory_and_records_moves() {
    let h = Harness::start().await;
    let s = sims(2).await;
    let done = collect(&h, &s).await;
    assert_eq!(done["collected"], 2, "{done}");
    // Node, 2 CPUs, 4 GPUs, 16 DIMMs, 4 drives, the enclosure, 2 PSUs.
    assert_eq!(done["bmcs"][0]["fru_locations"], 30, "{done}");

    let all = h.api.get_json("/hsm/v2/Inventory/Hardware").await;
    let want: Vec<(&str, usize)> = vec![
        ("Drive", 8),
        ("Memory", 32),
        ("Node", 2),
        ("NodeAccel", 8),
        ("NodeEnclosure", 2),
        ("NodeEnclosurePowerSupply", 4),
        ("Processor", 4),
    ];
    let got = count_types(&all);
    assert_eq!(
        got.iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        want
    );

    // The enclosure location and the enclosure's ComponentEndpoint name
    // the same Chassis with the same xname.
    let enc = h
        .api
        .get_json("/hsm/v2/Inventory/Hardware/x1000c0s0e0")
        .await;
    assert_eq!(enc["Type"], "NodeEnclosure", "{enc}");
    let ce = h
        .api
        .get_json("/hsm/v2/Inventory/ComponentEndpoints/x1000c0s0e0")
        .await;
    assert_eq!(
        (&ce["Type"], &ce["RedfishType"], &ce["RedfishSubtype"]),
        (
            &json!("NodeEnclosure"),
            &json!("Chassis"),
            &json!("RackMount")
        ),
        "{ce}"
    );
    assert_eq!(ce["OdataID"], "/redfish/v1/Chassis/1");
    assert_eq!(
        enc["NodeEnclosureLocationInfo"]["Id"], "1",
        "the same Chassis: {enc}"
    );

    let n0 = "x1000c0s0b0n0";
    let dimm = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/Hardware/{n0}d3"))
        .await;
    assert_eq!(dimm["HWInventoryByLocationType"], "HWInvByLocMemory");
    assert_eq!(dimm["MemoryLocationInfo"]["Id"], "DIMM4");
    let fru = &dimm["PopulatedFRU"];
    assert_eq!(fru["HWInventoryByFRUType"], "HWInvByFRUMemory");
    assert_eq!(fru["MemoryFRUInfo"]["Manufacturer"], "Hynix");
    let dimm_fru = fru["FRUID"].as_str().unwrap().to_string();
    assert_eq!(dimm_fru, "Memory.Hynix.HMA84GR7AFR4NXN.D00000000003");
    let gpu = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/Hardware/{n0}a1"))
        .await;
    assert_eq!(gpu["NodeAccelFRUInfo"], Value::Null);
    assert_eq!(
        gpu["PopulatedFRU"]["NodeAccelFRUInfo"]["ProcessorType"],
        "GPU"
    );
    let gpu_fru = gpu["PopulatedFRU"]["FRUID"].as_str().unwrap().to_string();
    // PCIe devices ride in the node's location details.
    let node = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/Hardware/{n0}"))
        .await;
    assert_eq!(
        node["NodeLocationInfo"]["PCIeDevices"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        node["NodeLocationInfo"]["PCIeDevices"][0]["PCIeFunctions"][0]["DeviceClass"],
        "NetworkController"
    );

    // Query nests a node's parts under it.
    let q = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/Hardware/Query/{n0}"))
        .await;
    assert_eq!(q["Format"], "NestNodesOnly");
    assert_eq!(q["Nodes"][0]["Memory"].as_array().unwrap().len(), 16);
    assert_eq!(q["Nodes"][0]["NodeAccels"].as_array().unwrap().len(), 4);
    assert!(q.get("Memory").is_none(), "{q}");
    let flat = h
        .api
        .get_json(&format!(
            "/hsm/v2/Inventory/Hardware/Query/{n0}?format=FullyFlat&type=Memory"
        ))
        .await;
    assert_eq!(flat["Memory"].as_array().unwrap().len(), 16);
    assert!(flat.get("Nodes").is_none());

    // Swap DIMM 4 and GPU 2 of node 0 with node 1's, and collect again.
    let slot = |bmc, kind, index| Slot {
        bmc,
        system: 0,
        kind,
        index,
    };
    s.hardware()
        .swap(slot(0, Unit::Dimm, 3), slot(1, Unit::Dimm, 3));
    s.hardware()
        .swap(slot(0, Unit::Gpu, 1), slot(1, Unit::Gpu, 1));
    let done = collect(&h, &s).await;
    assert_eq!(done["collected"], 2, "{done}");
    let n1 = "x1000c0s1b0n0";
    let hist = h
        .api
        .get_json(&format!(
            "/hsm/v2/Inventory/HardwareByFRU/History/{dimm_fru}"
        ))
        .await;
    assert_eq!(hist["ID"], dimm_fru);
    let events: Vec<(String, String)> = hist["History"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["ID"].as_str().unwrap().to_string(),
                e["EventType"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // The two BMCs are collected side by side: the DIMM may be detected
    // at node 1 before node 0 reports it gone.
    let mut moved = events[1..].to_vec();
    moved.sort();
    assert_eq!(events[0], (format!("{n0}d3"), "Added".to_string()));
    assert_eq!(
        moved,
        vec![
            (format!("{n0}d3"), "Removed".to_string()),
            (format!("{n1}d3"), "Detected".to_string()),
        ]
    );
    let now = h
        .api
        .get_json(&format!("/hsm/v2/Inventory/Hardware?fruid={dimm_fru}"))
        .await;
    assert_eq!(now[0]["ID"], format!("{n1}d3"));
    let gpu_hist = h
        .api
        .get_json(&format!(
            "/hsm/v2/Inventory/HardwareByFRU/History?fruid={gpu_fru}"
        ))
        .await;
    let detected: Vec<&Value> = gpu_hist["Components"][0]["History"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["EventType"] == "Detected")
        .collect();
    assert_eq!(detected.len(), 1, "{gpu_hist}");
    assert_eq!(detected[0]["ID"], format!("{n1}a1"));
    let by_loc = h
        .api
        .get_json(&format!(
            "/hsm/v2/Inventory/Hardware/History/{n0}d3?eventtype=removed"
        ))
        .await;
    assert_eq!(by_loc["History"].as_array().unwrap().len(), 1);
    assert_eq!(by_loc["History"][0]["FRUID"], dimm_fru);
    // Nothing else moved: one Added per FRU, plus the four moves' events.
    let all = h.api.get_json("/hsm/v2/Inventory/Hardware/History").await;
    let n: usize = all["Components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["History"].as_array().unwrap().len())
        .sum();
    assert_eq!(n, 60 + 8);

    // The CLI: a node's FRUs as a table, a FRU's history as JSON.
    let out = cli(&h, &["hw", "show", n0]).await;
    assert!(out.status.success(), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!("{n0}d3")) && table.contains("Hynix"),
        "{table}"
    );
    assert_eq!(table.matches(" Memory ").count(), 16, "{table}");
    let out = cli(&h, &["-o", "json", "hw", "history", &dimm_fru]).await;
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["History"].as_array().map(Vec::len), Some(3), "{v}");
    let out = cli(&h, &["hw", "history", &format!("{n1}d3")]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("Detected"));
    s.shutdown().await;
}

async fn cli(h: &Harness, args: &[&str]) -> std::process::Output {
    h.cli(args, Duration::from_secs(60)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bmc_withholding_a_collection_is_collected_with_the_rest() {
    let h = Harness::start().await;
    let s = sims(2).await;
    s.hardware().omit(1, Collection::Memory, true);
    s.hardware().omit(1, Collection::Power, true);
    let done = collect(&h, &s).await;
    assert_eq!(done["collected"], 2, "{done}");
    let b1 = done["bmcs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["xname"] == "x1000c0s1b0")
        .unwrap();
    let notes = b1["notes"].to_string();
    assert!(notes.contains("/Memory: HTTP 404"), "{notes}");
    assert!(notes.contains("/Power: HTTP 404"), "{notes}");
    assert_eq!(b1["fru_locations"], 30 - 16 - 2, "{done}");
    let mem = h
        .api
        .get_json("/hsm/v2/Inventory/Hardware?type=Memory")
        .await;
    assert_eq!(mem.as_array().unwrap().len(), 16);
    assert!(
        mem.as_array()
            .unwrap()
            .iter()
            .all(|l| l["ID"].as_str().unwrap().starts_with("x1000c0s0b0n0"))
    );
    s.shutdown().await;
}

/// Upstream's `Inventory/Hardware*` behaviour (its handlers and
/// black-box tests), one request per row: method, path, body, status, and
/// a check of the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_hardware_api_behaviour() {
    let h = Harness::start().await;
    let node = json!({"Hardware": [{
        "ID": "x9999c7s9b9n9", "Type": "Node", "Ordinal": 9, "Status": "Populated",
        "HWInventoryByLocationType": "HWInvByLocNode",
        "NodeLocationInfo": {"Id": "Node9", "Name": "n9", "Description": "", "HostName": ""},
        "PopulatedFRU": {"FRUID": "ignored", "Type": "Node", "Subtype": "",
            "HWInventoryByFRUType": "HWInvByFRUNode",
            "NodeFRUInfo": {"Manufacturer": "Cray Inc.", "PartNumber": "NodeP-1", "SerialNumber": "NS9", "Model": "EX425"}}
    }, {
        "ID": "x9999c7s9b9n9p0",
        "ProcessorLocationInfo": {"Id": "CPU0", "Name": "", "Description": "", "Socket": "P0"},
        "PopulatedFRU": {"ProcessorFRUInfo": {"Manufacturer": "AMD", "PartNumber": "100-1", "SerialNumber": "S0"}}
    }, {
        "ID": "x9999c7t9",
        "CMMRectifierLocationInfo": {"Name": "Rectifier9", "FirmwareVersion": ""},
        "PopulatedFRU": {"CMMRectifierFRUInfo": {"Manufacturer": "ABB", "SerialNumber": "LBGEPE20KZ46051725", "Model": "CC15000H3C380T", "PartNumber": ""}}
    }]});
    type Check = fn(&Value);
    let rows: Vec<(&str, &str, Option<Value>, u16, Check)> = vec![
        ("GET", "/hsm/v2/Inventory/Hardware", None, 200, |v| {
            assert_eq!(v, &json!([]))
        }),
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(node.clone()),
            200,
            |v| assert_eq!(v, &json!({"code": 0, "message": "Created 3 entries"})),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/x9999c7s9b9n9",
            None,
            200,
            |v| {
                assert_eq!(v["Type"], "Node");
                assert_eq!(v["Ordinal"], 9);
                assert_eq!(v["Status"], "Populated");
                assert_eq!(v["PopulatedFRU"]["FRUID"], "Node.CrayInc.NodeP1.NS9");
                assert_eq!(v["PopulatedFRU"]["NodeFRUInfo"]["Model"], "EX425");
            },
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/X9999C7T09",
            None,
            200,
            |v| {
                assert_eq!(v["HWInventoryByLocationType"], "HWInvByLocCMMRectifier");
                assert_eq!(
                    v["PopulatedFRU"]["FRUID"],
                    "CMMRectifier.ABB.LBGEPE20KZ46051725"
                );
            },
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware?type=Processor",
            None,
            200,
            |v| {
                assert_eq!(v.as_array().unwrap().len(), 1);
                assert_eq!(v[0]["ProcessorLocationInfo"]["Socket"], "P0");
            },
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware?manufacturer=abb",
            None,
            200,
            |v| assert_eq!(v[0]["ID"], "x9999c7t9"),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware?fruid=Processor.AMD.1001.S0",
            None,
            200,
            |v| assert_eq!(v[0]["ID"], "x9999c7s9b9n9p0"),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware?id=x9999c7s9b9n9&serialnumber=NS9",
            None,
            200,
            |v| assert_eq!(v.as_array().unwrap().len(), 1),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware?type=Bogus",
            None,
            400,
            |_| {},
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware?id=notanxname",
            None,
            400,
            |_| {},
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/x9989c7s9b9n9",
            None,
            404,
            |v| assert_eq!(v["detail"], "no such xname."),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/HardwareByFRU/Node.CrayInc.NodeP1.NS9",
            None,
            200,
            |v| {
                assert_eq!(v["HWInventoryByFRUType"], "HWInvByFRUNode");
                assert_eq!(v["NodeFRUInfo"]["SerialNumber"], "NS9");
            },
        ),
        (
            "GET",
            "/hsm/v2/Inventory/HardwareByFRU?type=CMMRectifier",
            None,
            200,
            |v| assert_eq!(v.as_array().unwrap().len(), 1),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/HardwareByFRU/nosuchfru",
            None,
            404,
            |_| {},
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/Query/x9999c7s9b9n9",
            None,
            200,
            |v| {
                assert_eq!(v["XName"], "x9999c7s9b9n9");
                assert_eq!(v["Format"], "NestNodesOnly");
                assert_eq!(v["Nodes"][0]["Processors"][0]["ID"], "x9999c7s9b9n9p0");
                assert!(v.get("Processors").is_none());
            },
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/Query/x9999c7s9b9n9?children=false",
            None,
            200,
            |v| assert!(v["Nodes"][0].get("Processors").is_none(), "{v}"),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/Query/x9999c7s9b9n9p0?parents=true",
            None,
            200,
            |v| assert_eq!(v["Nodes"][0]["ID"], "x9999c7s9b9n9"),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/Query/s0?format=FullyFlat",
            None,
            200,
            |v| {
                assert_eq!(v["Processors"].as_array().unwrap().len(), 1);
                assert_eq!(v["CMMRectifiers"].as_array().unwrap().len(), 1);
            },
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/Query/all?type=CMMRectifier",
            None,
            200,
            |v| assert!(v.get("Nodes").is_none()),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/Query/s0?format=Hierarchical",
            None,
            400,
            |v| assert_eq!(v["detail"], "Invalid format"),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/Query/s0?parents=maybe",
            None,
            400,
            |_| {},
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/Query/xyz",
            None,
            400,
            |v| assert_eq!(v["detail"], "Invalid xname"),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/History/x9999c7s9b9n9",
            None,
            200,
            |v| {
                assert_eq!(v["ID"], "x9999c7s9b9n9");
                assert_eq!(v["History"][0]["EventType"], "Detected");
                assert_eq!(v["History"][0]["FRUID"], "Node.CrayInc.NodeP1.NS9");
            },
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/History?eventtype=Bogus",
            None,
            400,
            |_| {},
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/History?eventtype=detected",
            None,
            200,
            |v| assert_eq!(v["Components"].as_array().unwrap().len(), 3),
        ),
        (
            "GET",
            "/hsm/v2/Inventory/HardwareByFRU/History",
            None,
            200,
            |v| assert_eq!(v["Components"].as_array().unwrap().len(), 3),
        ),
        // Posting the same again adds no duplicate Detected event.
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(node.clone()),
            200,
            |_| {},
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/History/x9999c7t9",
            None,
            200,
            |v| assert_eq!(v["History"].as_array().unwrap().len(), 1),
        ),
        // Upstream's negative cases: missing ID, empty ID, no PopulatedFRU,
        // no location info, empty PopulatedFRU, bad xname, not an array.
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(
                json!({"Hardware": [{"CMMRectifierLocationInfo": {}, "PopulatedFRU": {"CMMRectifierFRUInfo": {}}}]}),
            ),
            400,
            |_| {},
        ),
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(
                json!({"Hardware": [{"ID": "", "ChassisLocationInfo": {}, "PopulatedFRU": {"ChassisFRUInfo": {}}}]}),
            ),
            400,
            |_| {},
        ),
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(json!({"Hardware": [{"ID": "x1c0s0b0n0d0", "MemoryLocationInfo": {}}]})),
            400,
            |_| {},
        ),
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(json!({"Hardware": [{"ID": "x1c0s0b0", "PopulatedFRU": {"NodeBMCFRUInfo": {}}}]})),
            400,
            |_| {},
        ),
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(
                json!({"Hardware": [{"ID": "x1c0s0e0", "NodeEnclosureLocationInfo": {}, "PopulatedFRU": {}}]}),
            ),
            400,
            |_| {},
        ),
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(
                json!({"Hardware": [{"ID": "x1c0s0b0n0h", "NodeHsnNicLocationInfo": {}, "PopulatedFRU": {"NodeHsnNicFRUInfo": {}}}]}),
            ),
            400,
            |_| {},
        ),
        (
            "POST",
            "/hsm/v2/Inventory/Hardware",
            Some(json!({"Hardware": "no"})),
            400,
            |_| {},
        ),
        // Deleting a location keeps its FRU; deleting a FRU empties its location.
        (
            "DELETE",
            "/hsm/v2/Inventory/Hardware/x9999c7s9b9n9p0",
            None,
            200,
            |v| assert_eq!(v["message"], "deleted 1 entry"),
        ),
        (
            "DELETE",
            "/hsm/v2/Inventory/Hardware/x9999c7s9b9n9p0",
            None,
            404,
            |_| {},
        ),
        (
            "GET",
            "/hsm/v2/Inventory/HardwareByFRU/Processor.AMD.1001.S0",
            None,
            200,
            |_| {},
        ),
        (
            "DELETE",
            "/hsm/v2/Inventory/HardwareByFRU/Node.CrayInc.NodeP1.NS9",
            None,
            200,
            |_| {},
        ),
        (
            "GET",
            "/hsm/v2/Inventory/Hardware/x9999c7s9b9n9",
            None,
            200,
            |v| assert!(v.get("PopulatedFRU").is_none(), "{v}"),
        ),
        (
            "DELETE",
            "/hsm/v2/Inventory/HardwareByFRU/History/Processor.AMD.1001.S0",
            None,
            200,
            |_| {},
        ),
        (
            "DELETE",
            "/hsm/v2/Inventory/Hardware/History/x9999c7t9",
            None,
            200,
            |_| {},
        ),
        (
            "DELETE",
            "/hsm/v2/Inventory/Hardware/History",
            None,
            200,
            |v| assert_eq!(v["message"], "deleted 1 entries"),
        ),
        (
            "DELETE",
            "/hsm/v2/Inventory/Hardware/History",
            None,
            404,
            |_| {},
        ),
        ("DELETE", "/hsm/v2/Inventory/Hardware", None, 200, |_| {}),
        ("DELETE", "/hsm/v2/Inventory/Hardware", None, 404, |v| {
            assert_eq!(v["detail"], "no entries to delete")
        }),
        (
            "DELETE",
            "/hsm/v2/Inventory/HardwareByFRU",
            None,
            200,
            |_| {},
        ),
        ("GET", "/hsm/v2/Inventory/HardwareByFRU", None, 200, |v| {
            assert_eq!(v, &json!([]))
        }),
    ];
    for (method, path, body, status, check) in rows {
        let r = match (method, &body) {
            ("GET", _) => h.api.get(path).await,
            ("DELETE", _) => h.api.delete(path).await,
            (_, Some(b)) => h.api.post(path, b).await,
            _ => unreachable!(),
        };
        let v = if status >= 400 {
            r.problem(status)
        } else {
            r.status(status).json()
        };
        check(&v);
    }
    // Writing needs a token; so does reading.
    h.anon.get("/hsm/v2/Inventory/Hardware").await.problem(401);
}

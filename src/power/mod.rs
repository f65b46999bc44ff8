//! PCS-compatible power transitions: sequencing, deadlines and escalation over
//! the Redfish client, with power state reconciled into the inventory.

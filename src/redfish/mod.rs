//! Redfish client used by discovery and power. A leaf module: it knows BMCs,
//! sessions and resources, and nothing of the inventory.

// Package config owns the fieldgate agent's configuration file: the TOML
// schema (Config and its sections), strict loading with line-numbered errors
// (Load, Parse), defaults, and validation that reports every problem at once
// (Validate, *Error). It also expands the registration-id placeholders
// ({serial}, {machine_id}, {hostname}, {mac}) from facts read off the host
// (ReadHostFacts, ExpandRegistrationID).
//
// The sensor and output kinds a configuration may name, and the keys each kind
// accepts, come from one table in kinds.go; hardware kinds extend that table.
//
// The package does no network I/O. Validate never touches the file system;
// Load reads only the configuration file and ReadHostFacts only the host
// identity files under the root it is given.
package config

//! Test support: the network-namespace hosts, sshd, sudo and dockerd that integration tests run against.

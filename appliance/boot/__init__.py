"""Boot services: iPXE scripts and images over HTTP, iPXE binaries over TFTP, DHCP config."""

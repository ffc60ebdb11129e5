# What the IAS call-home headers read of a board (ids, address, free space, core version): the
# one fake the unit tests that build those headers share.


class IdentityBoard:
    def mac(self):
        return "24:0A:C4:12:34:56"

    def wifi_ip(self):
        return "192.168.1.23"

    def fs_free(self):
        return 1000000

    def flash_id(self):
        return 1458400

    def chip_id(self):
        return 314842148

    def core_version(self):
        return "v1.29.0"

    def flash_size(self):
        return 4194304

//! Numbers of the kernel's uapi headers (`linux/netlink.h`,
//! `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`), under
//! their kernel names. Each module groups one enumeration.

/// Declares constants documented with their kernel name.
macro_rules! uapi {
    ($t:ty; $($name:ident = $v:expr),* $(,)?) => {
        $(
            #[doc = concat!("`", stringify!($name), "`")]
            pub const $name: $t = $v;
        )*
    };
}

/// `linux/netlink.h`.
pub mod netlink {
    uapi!(u16;
        NLM_F_REQUEST = 0x1, NLM_F_MULTI = 0x2, NLM_F_ACK = 0x4, NLM_F_ECHO = 0x8,
        NLM_F_ROOT = 0x100, NLM_F_MATCH = 0x200, NLM_F_DUMP = 0x300,
        NLM_F_REPLACE = 0x100, NLM_F_EXCL = 0x200, NLM_F_CREATE = 0x400, NLM_F_APPEND = 0x800,
        NLMSG_NOOP = 1, NLMSG_ERROR = 2, NLMSG_DONE = 3, NLMSG_OVERRUN = 4,
    );
    /// The size of `struct nlmsghdr`.
    pub const NLMSG_HDRLEN: usize = 16;
}

/// `linux/netfilter/nfnetlink.h` and `linux/netfilter.h`.
pub mod nfnl {
    uapi!(u16;
        NFNL_SUBSYS_NFTABLES = 10,
        NFNL_MSG_BATCH_BEGIN = 0x10, NFNL_MSG_BATCH_END = 0x11,
        NFNL_BATCH_GENID = 1,
    );
    uapi!(u8; NFNETLINK_V0 = 0, NFPROTO_UNSPEC = 0, NFPROTO_INET = 1, NFPROTO_IPV4 = 2,
        NFPROTO_ARP = 3, NFPROTO_NETDEV = 5, NFPROTO_BRIDGE = 7, NFPROTO_IPV6 = 10);
    /// The size of `struct nfgenmsg`.
    pub const NFGENMSG_LEN: usize = 4;
}

/// `enum nf_tables_msg_types`.
pub mod msg {
    uapi!(u16;
        NFT_MSG_NEWTABLE = 0, NFT_MSG_GETTABLE = 1, NFT_MSG_DELTABLE = 2,
        NFT_MSG_NEWCHAIN = 3, NFT_MSG_GETCHAIN = 4, NFT_MSG_DELCHAIN = 5,
        NFT_MSG_NEWRULE = 6, NFT_MSG_GETRULE = 7, NFT_MSG_DELRULE = 8,
        NFT_MSG_NEWSET = 9, NFT_MSG_GETSET = 10, NFT_MSG_DELSET = 11,
        NFT_MSG_NEWSETELEM = 12, NFT_MSG_GETSETELEM = 13, NFT_MSG_DELSETELEM = 14,
        NFT_MSG_NEWGEN = 15, NFT_MSG_GETGEN = 16, NFT_MSG_TRACE = 17,
        NFT_MSG_NEWOBJ = 18, NFT_MSG_GETOBJ = 19, NFT_MSG_DELOBJ = 20,
    );
}

/// Attributes of tables, chains, hooks, rules, expressions, sets, set
/// elements, data, verdicts, objects and the generation.
pub mod attr {
    uapi!(u16;
        NFTA_TABLE_NAME = 1, NFTA_TABLE_FLAGS = 2, NFTA_TABLE_USE = 3, NFTA_TABLE_HANDLE = 4,
        NFTA_TABLE_USERDATA = 6,
        NFTA_CHAIN_TABLE = 1, NFTA_CHAIN_HANDLE = 2, NFTA_CHAIN_NAME = 3, NFTA_CHAIN_HOOK = 4,
        NFTA_CHAIN_POLICY = 5, NFTA_CHAIN_USE = 6, NFTA_CHAIN_TYPE = 7, NFTA_CHAIN_COUNTERS = 8,
        NFTA_CHAIN_FLAGS = 10, NFTA_CHAIN_ID = 11, NFTA_CHAIN_USERDATA = 12,
        NFTA_HOOK_HOOKNUM = 1, NFTA_HOOK_PRIORITY = 2, NFTA_HOOK_DEV = 3,
        NFTA_RULE_TABLE = 1, NFTA_RULE_CHAIN = 2, NFTA_RULE_HANDLE = 3, NFTA_RULE_EXPRESSIONS = 4,
        NFTA_RULE_POSITION = 6, NFTA_RULE_USERDATA = 7, NFTA_RULE_ID = 9,
        NFTA_LIST_ELEM = 1,
        NFTA_EXPR_NAME = 1, NFTA_EXPR_DATA = 2,
        NFTA_SET_TABLE = 1, NFTA_SET_NAME = 2, NFTA_SET_FLAGS = 3, NFTA_SET_KEY_TYPE = 4,
        NFTA_SET_KEY_LEN = 5, NFTA_SET_DATA_TYPE = 6, NFTA_SET_DATA_LEN = 7, NFTA_SET_POLICY = 8,
        NFTA_SET_DESC = 9, NFTA_SET_ID = 10, NFTA_SET_TIMEOUT = 11, NFTA_SET_GC_INTERVAL = 12,
        NFTA_SET_USERDATA = 13, NFTA_SET_HANDLE = 16,
        NFTA_SET_DESC_SIZE = 1, NFTA_SET_DESC_CONCAT = 2, NFTA_SET_FIELD_LEN = 1,
        NFTA_SET_ELEM_LIST_TABLE = 1, NFTA_SET_ELEM_LIST_SET = 2, NFTA_SET_ELEM_LIST_ELEMENTS = 3,
        NFTA_SET_ELEM_LIST_SET_ID = 4,
        NFTA_SET_ELEM_KEY = 1, NFTA_SET_ELEM_DATA = 2, NFTA_SET_ELEM_FLAGS = 3,
        NFTA_SET_ELEM_TIMEOUT = 4, NFTA_SET_ELEM_EXPIRATION = 5, NFTA_SET_ELEM_USERDATA = 6,
        NFTA_SET_ELEM_KEY_END = 10,
        NFTA_DATA_VALUE = 1, NFTA_DATA_VERDICT = 2,
        NFTA_VERDICT_CODE = 1, NFTA_VERDICT_CHAIN = 2,
        NFTA_OBJ_TABLE = 1, NFTA_OBJ_NAME = 2, NFTA_OBJ_TYPE = 3, NFTA_OBJ_DATA = 4,
        NFTA_OBJ_HANDLE = 6, NFTA_OBJ_USERDATA = 8,
        NFTA_GEN_ID = 1,
    );
}

/// Attributes of the expressions kube-proxy's rules use.
pub mod expr {
    uapi!(u16;
        NFTA_PAYLOAD_DREG = 1, NFTA_PAYLOAD_BASE = 2, NFTA_PAYLOAD_OFFSET = 3, NFTA_PAYLOAD_LEN = 4,
        NFTA_META_DREG = 1, NFTA_META_KEY = 2, NFTA_META_SREG = 3,
        NFTA_CMP_SREG = 1, NFTA_CMP_OP = 2, NFTA_CMP_DATA = 3,
        NFTA_BITWISE_SREG = 1, NFTA_BITWISE_DREG = 2, NFTA_BITWISE_LEN = 3, NFTA_BITWISE_MASK = 4,
        NFTA_BITWISE_XOR = 5,
        NFTA_LOOKUP_SET = 1, NFTA_LOOKUP_SREG = 2, NFTA_LOOKUP_DREG = 3, NFTA_LOOKUP_SET_ID = 4,
        NFTA_LOOKUP_FLAGS = 5,
        NFTA_IMMEDIATE_DREG = 1, NFTA_IMMEDIATE_DATA = 2,
        NFTA_NG_DREG = 1, NFTA_NG_MODULUS = 2, NFTA_NG_TYPE = 3, NFTA_NG_OFFSET = 4,
        NFTA_NAT_TYPE = 1, NFTA_NAT_FAMILY = 2, NFTA_NAT_REG_ADDR_MIN = 3, NFTA_NAT_REG_ADDR_MAX = 4,
        NFTA_NAT_REG_PROTO_MIN = 5, NFTA_NAT_REG_PROTO_MAX = 6, NFTA_NAT_FLAGS = 7,
        NFTA_MASQ_FLAGS = 1,
        NFTA_DYNSET_SET_NAME = 1, NFTA_DYNSET_SET_ID = 2, NFTA_DYNSET_OP = 3,
        NFTA_DYNSET_SREG_KEY = 4, NFTA_DYNSET_SREG_DATA = 5, NFTA_DYNSET_TIMEOUT = 6,
        NFTA_COUNTER_BYTES = 1, NFTA_COUNTER_PACKETS = 2,
        NFTA_OBJREF_IMM_TYPE = 1, NFTA_OBJREF_IMM_NAME = 2,
        NFTA_FIB_DREG = 1, NFTA_FIB_RESULT = 2, NFTA_FIB_FLAGS = 3,
        NFTA_CT_DREG = 1, NFTA_CT_KEY = 2, NFTA_CT_DIRECTION = 3,
        NFTA_REJECT_TYPE = 1, NFTA_REJECT_ICMP_CODE = 2,
    );
}

/// Values: registers, verdicts, operators, keys, flags.
pub mod val {
    uapi!(u32;
        NFT_REG_VERDICT = 0, NFT_REG_1 = 1, NFT_REG_2 = 2, NFT_REG_3 = 3, NFT_REG_4 = 4,
        NFT_REG32_00 = 8,
        NFT_PAYLOAD_LL_HEADER = 0, NFT_PAYLOAD_NETWORK_HEADER = 1, NFT_PAYLOAD_TRANSPORT_HEADER = 2,
        NFT_META_MARK = 3, NFT_META_IIFNAME = 6, NFT_META_NFPROTO = 15, NFT_META_L4PROTO = 16,
        NFT_CMP_EQ = 0, NFT_CMP_NEQ = 1,
        NFT_LOOKUP_F_INV = 1,
        NFT_NG_INCREMENTAL = 0, NFT_NG_RANDOM = 1,
        NFT_NAT_SNAT = 0, NFT_NAT_DNAT = 1,
        NF_NAT_RANGE_MAP_IPS = 0x1, NF_NAT_RANGE_PROTO_SPECIFIED = 0x2,
        NF_NAT_RANGE_PROTO_RANDOM = 0x4, NF_NAT_RANGE_PERSISTENT = 0x8,
        NF_NAT_RANGE_PROTO_RANDOM_FULLY = 0x10,
        NFT_DYNSET_OP_ADD = 0, NFT_DYNSET_OP_UPDATE = 1,
        NFT_OBJECT_COUNTER = 1,
        NFTA_FIB_F_SADDR = 1, NFTA_FIB_F_DADDR = 2, NFTA_FIB_F_MARK = 4, NFTA_FIB_F_IIF = 8,
        NFTA_FIB_F_OIF = 0x10,
        NFT_FIB_RESULT_OIF = 1, NFT_FIB_RESULT_OIFNAME = 2, NFT_FIB_RESULT_ADDRTYPE = 3,
        NFT_CT_STATE = 0, NFT_CT_STATUS = 2,
        NFT_REJECT_ICMP_UNREACH = 0, NFT_REJECT_TCP_RST = 1, NFT_REJECT_ICMPX_UNREACH = 2,
        NFT_SET_ANONYMOUS = 0x1, NFT_SET_CONSTANT = 0x2, NFT_SET_INTERVAL = 0x4, NFT_SET_MAP = 0x8,
        NFT_SET_TIMEOUT = 0x10, NFT_SET_EVAL = 0x20, NFT_SET_OBJECT = 0x40, NFT_SET_CONCAT = 0x80,
        NFT_SET_ELEM_INTERVAL_END = 0x1,
        NFT_DATA_VERDICT = 0xffff_ff00,
    );
    uapi!(i32;
        NF_DROP = 0, NF_ACCEPT = 1,
        NFT_CONTINUE = -1, NFT_BREAK = -2, NFT_JUMP = -3, NFT_GOTO = -4, NFT_RETURN = -5,
    );
}

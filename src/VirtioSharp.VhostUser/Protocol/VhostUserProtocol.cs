namespace VirtioSharp.VhostUser.Protocol;

/// <summary>Header flags (vhost-user.rst, "Header").</summary>
[Flags]
public enum VhostUserFlags : uint
{
    None = 0,
    /// <summary>Lower two bits: the protocol version, currently 1.</summary>
    Version1 = 0x1,
    VersionMask = 0x3,
    /// <summary>Bit 2: set on every reply from the back-end.</summary>
    Reply = 0x4,
    /// <summary>Bit 3: the sender wants an acknowledgement (REPLY_ACK).</summary>
    NeedReply = 0x8,
}

/// <summary>Protocol feature bits (vhost-user.rst, "Protocol features").</summary>
public static class VhostUserProtocolFeatures
{
    public const int Mq = 0;
    public const int LogShmfd = 1;
    public const int Rarp = 2;
    public const int ReplyAck = 3;
    public const int Mtu = 4;
    public const int BackendReq = 5;
    public const int CrossEndian = 6;
    public const int CryptoSession = 7;
    public const int Pagefault = 8;
    public const int Config = 9;
    public const int BackendSendFd = 10;
    public const int HostNotifier = 11;
    public const int InflightShmfd = 12;
    public const int ResetDevice = 13;
    public const int InbandNotifications = 14;
    public const int ConfigureMemSlots = 15;
    public const int Status = 16;

    public static bool Has(ulong features, int bit) => (features & (1UL << bit)) != 0;

    public static string Name(int bit) => bit switch
    {
        Mq => "MQ",
        LogShmfd => "LOG_SHMFD",
        Rarp => "RARP",
        ReplyAck => "REPLY_ACK",
        Mtu => "MTU",
        BackendReq => "BACKEND_REQ",
        CrossEndian => "CROSS_ENDIAN",
        CryptoSession => "CRYPTO_SESSION",
        Pagefault => "PAGEFAULT",
        Config => "CONFIG",
        BackendSendFd => "BACKEND_SEND_FD",
        HostNotifier => "HOST_NOTIFIER",
        InflightShmfd => "INFLIGHT_SHMFD",
        ResetDevice => "RESET_DEVICE",
        InbandNotifications => "INBAND_NOTIFICATIONS",
        ConfigureMemSlots => "CONFIGURE_MEM_SLOTS",
        Status => "STATUS",
        _ => $"bit {bit}",
    };

    public static string Describe(ulong features)
    {
        var names = new List<string>();
        for (var bit = 0; bit < 64; bit++)
        {
            if (Has(features, bit))
                names.Add(Name(bit));
        }
        return names.Count == 0 ? "(none)" : string.Join(" ", names);
    }
}

/// <summary>Fixed numbers of the protocol.</summary>
public static class VhostUserConstants
{
    /// <summary>Feature bit 30 in GET_FEATURES/SET_FEATURES: protocol features are negotiated.</summary>
    public const int ProtocolFeaturesBit = 30;
    public const ulong ProtocolFeaturesMask = 1UL << ProtocolFeaturesBit;
    /// <summary>request, flags, size: three 32-bit fields.</summary>
    public const int HeaderSize = 12;
    /// <summary>Memory regions one SET_MEM_TABLE can describe.</summary>
    public const int MaxMemoryRegions = 8;
    /// <summary>Largest payload this implementation accepts.</summary>
    public const int MaxPayloadSize = 4096;
    /// <summary>SET_VRING_KICK/CALL/ERR: bits 0-7 hold the ring index.</summary>
    public const ulong VringIndexMask = 0xff;
    /// <summary>SET_VRING_KICK/CALL/ERR: bit 8 says no file descriptor came with the message.</summary>
    public const ulong VringNoFdFlag = 0x100;
    /// <summary>GET_CONFIG/SET_CONFIG: offset, size, flags before the config bytes.</summary>
    public const int ConfigHeaderSize = 12;
    public const int MaxConfigSize = 256;
}

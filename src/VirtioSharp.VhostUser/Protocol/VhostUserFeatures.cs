using VirtioSharp.Devices;

namespace VirtioSharp.VhostUser.Protocol;

/// <summary>vhost-user's own feature bits: the one virtio bit it borrows and the protocol feature bits.</summary>
public static class VhostUserFeatures
{
    /// <summary>VHOST_USER_F_PROTOCOL_FEATURES: the virtio feature bit 30 vhost-user reuses.</summary>
    public const int ProtocolFeaturesBit = 30;
    public const ulong ProtocolFeatures = 1UL << ProtocolFeaturesBit;

    // vhost-user.rst, "Protocol features".
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

    public static ulong Bit(int bit) => VirtioFeatures.Bit(bit);
    public static bool Has(ulong features, int bit) => VirtioFeatures.Has(features, bit);

    public static string ProtocolName(int bit) => bit switch
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

    public static string DescribeProtocol(ulong features) => VirtioFeatures.Describe(features, ProtocolName);
}

namespace VirtioSharp.VhostUser.Protocol;

/// <summary>Front-end message types (vhost-user.rst, "Front-end message types").</summary>
public enum VhostUserRequest : uint
{
    None = 0,
    GetFeatures = 1,
    SetFeatures = 2,
    SetOwner = 3,
    ResetOwner = 4,
    SetMemTable = 5,
    SetLogBase = 6,
    SetLogFd = 7,
    SetVringNum = 8,
    SetVringAddr = 9,
    SetVringBase = 10,
    GetVringBase = 11,
    SetVringKick = 12,
    SetVringCall = 13,
    SetVringErr = 14,
    GetProtocolFeatures = 15,
    SetProtocolFeatures = 16,
    GetQueueNum = 17,
    SetVringEnable = 18,
    SendRarp = 19,
    NetSetMtu = 20,
    SetBackendReqFd = 21,
    IotlbMsg = 22,
    SetVringEndian = 23,
    GetConfig = 24,
    SetConfig = 25,
    CreateCryptoSession = 26,
    CloseCryptoSession = 27,
    PostcopyAdvise = 28,
    PostcopyListen = 29,
    PostcopyEnd = 30,
    GetInflightFd = 31,
    SetInflightFd = 32,
    GpuSetSocket = 33,
    ResetDevice = 34,
    VringKick = 35,
    GetMaxMemSlots = 36,
    AddMemReg = 37,
    RemMemReg = 38,
    SetStatus = 39,
    GetStatus = 40,
}

public static class VhostUserRequestText
{
    /// <summary>The spec's name, e.g. VHOST_USER_SET_MEM_TABLE, for logs.</summary>
    public static string SpecName(this VhostUserRequest request) => request switch
    {
        VhostUserRequest.GetFeatures => "VHOST_USER_GET_FEATURES",
        VhostUserRequest.SetFeatures => "VHOST_USER_SET_FEATURES",
        VhostUserRequest.SetOwner => "VHOST_USER_SET_OWNER",
        VhostUserRequest.ResetOwner => "VHOST_USER_RESET_OWNER",
        VhostUserRequest.SetMemTable => "VHOST_USER_SET_MEM_TABLE",
        VhostUserRequest.SetLogBase => "VHOST_USER_SET_LOG_BASE",
        VhostUserRequest.SetLogFd => "VHOST_USER_SET_LOG_FD",
        VhostUserRequest.SetVringNum => "VHOST_USER_SET_VRING_NUM",
        VhostUserRequest.SetVringAddr => "VHOST_USER_SET_VRING_ADDR",
        VhostUserRequest.SetVringBase => "VHOST_USER_SET_VRING_BASE",
        VhostUserRequest.GetVringBase => "VHOST_USER_GET_VRING_BASE",
        VhostUserRequest.SetVringKick => "VHOST_USER_SET_VRING_KICK",
        VhostUserRequest.SetVringCall => "VHOST_USER_SET_VRING_CALL",
        VhostUserRequest.SetVringErr => "VHOST_USER_SET_VRING_ERR",
        VhostUserRequest.GetProtocolFeatures => "VHOST_USER_GET_PROTOCOL_FEATURES",
        VhostUserRequest.SetProtocolFeatures => "VHOST_USER_SET_PROTOCOL_FEATURES",
        VhostUserRequest.GetQueueNum => "VHOST_USER_GET_QUEUE_NUM",
        VhostUserRequest.SetVringEnable => "VHOST_USER_SET_VRING_ENABLE",
        VhostUserRequest.SendRarp => "VHOST_USER_SEND_RARP",
        VhostUserRequest.NetSetMtu => "VHOST_USER_NET_SET_MTU",
        VhostUserRequest.SetBackendReqFd => "VHOST_USER_SET_BACKEND_REQ_FD",
        VhostUserRequest.IotlbMsg => "VHOST_USER_IOTLB_MSG",
        VhostUserRequest.SetVringEndian => "VHOST_USER_SET_VRING_ENDIAN",
        VhostUserRequest.GetConfig => "VHOST_USER_GET_CONFIG",
        VhostUserRequest.SetConfig => "VHOST_USER_SET_CONFIG",
        VhostUserRequest.CreateCryptoSession => "VHOST_USER_CREATE_CRYPTO_SESSION",
        VhostUserRequest.CloseCryptoSession => "VHOST_USER_CLOSE_CRYPTO_SESSION",
        VhostUserRequest.PostcopyAdvise => "VHOST_USER_POSTCOPY_ADVISE",
        VhostUserRequest.PostcopyListen => "VHOST_USER_POSTCOPY_LISTEN",
        VhostUserRequest.PostcopyEnd => "VHOST_USER_POSTCOPY_END",
        VhostUserRequest.GetInflightFd => "VHOST_USER_GET_INFLIGHT_FD",
        VhostUserRequest.SetInflightFd => "VHOST_USER_SET_INFLIGHT_FD",
        VhostUserRequest.GpuSetSocket => "VHOST_USER_GPU_SET_SOCKET",
        VhostUserRequest.ResetDevice => "VHOST_USER_RESET_DEVICE",
        VhostUserRequest.VringKick => "VHOST_USER_VRING_KICK",
        VhostUserRequest.GetMaxMemSlots => "VHOST_USER_GET_MAX_MEM_SLOTS",
        VhostUserRequest.AddMemReg => "VHOST_USER_ADD_MEM_REG",
        VhostUserRequest.RemMemReg => "VHOST_USER_REM_MEM_REG",
        VhostUserRequest.SetStatus => "VHOST_USER_SET_STATUS",
        VhostUserRequest.GetStatus => "VHOST_USER_GET_STATUS",
        _ => $"request {(uint)request}",
    };

    /// <summary>
    /// Requests whose reply is part of the message's definition ("Communication": the ones that
    /// require replies), so need_reply adds nothing to them.
    /// </summary>
    public static bool AlwaysReplies(this VhostUserRequest request) => request is
        VhostUserRequest.GetFeatures or VhostUserRequest.GetProtocolFeatures or VhostUserRequest.GetVringBase
        or VhostUserRequest.GetQueueNum or VhostUserRequest.GetConfig or VhostUserRequest.GetMaxMemSlots
        or VhostUserRequest.GetInflightFd or VhostUserRequest.GetStatus or VhostUserRequest.IotlbMsg
        or VhostUserRequest.PostcopyAdvise or VhostUserRequest.PostcopyEnd;
}

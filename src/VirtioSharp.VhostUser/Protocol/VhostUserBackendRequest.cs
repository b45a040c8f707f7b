namespace VirtioSharp.VhostUser.Protocol;

/// <summary>
/// Back-end message types (vhost-user.rst, "Back-end message types"): requests the back-end sends
/// on the channel the front-end gave it with VHOST_USER_SET_BACKEND_REQ_FD; the front-end replies.
/// Their numbers overlap the front-end's, so they never share a header type with them.
/// </summary>
public enum VhostUserBackendRequest : uint
{
    None = 0,
    IotlbMsg = 1,
    ConfigChangeMsg = 2,
    VringHostNotifierMsg = 3,
    VringCall = 4,
    VringErr = 5,
}

public static class VhostUserBackendRequestText
{
    public static string SpecName(this VhostUserBackendRequest request) => request switch
    {
        VhostUserBackendRequest.IotlbMsg => "VHOST_USER_BACKEND_IOTLB_MSG",
        VhostUserBackendRequest.ConfigChangeMsg => "VHOST_USER_BACKEND_CONFIG_CHANGE_MSG",
        VhostUserBackendRequest.VringHostNotifierMsg => "VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG",
        VhostUserBackendRequest.VringCall => "VHOST_USER_BACKEND_VRING_CALL",
        VhostUserBackendRequest.VringErr => "VHOST_USER_BACKEND_VRING_ERR",
        _ => $"back-end request {(uint)request}",
    };
}

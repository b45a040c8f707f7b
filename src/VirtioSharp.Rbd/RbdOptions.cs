namespace VirtioSharp.Rbd;

/// <summary>How to reach the cluster and how long to wait for it.</summary>
public sealed record RbdOptions
{
    /// <summary>ceph.conf to read; null searches the usual places ($CEPH_CONF, /etc/ceph/ceph.conf, ~/.ceph/config, ./ceph.conf).</summary>
    public string? ConfPath { get; init; }

    /// <summary>Ceph user without the "client." prefix.</summary>
    public string Id { get; init; } = "admin";

    public bool ReadOnly { get; init; }

    /// <summary>Longest wait for the monitors at start (client_mount_timeout, rados_mon_op_timeout).</summary>
    public int ConnectTimeoutSeconds { get; init; } = 15;

    /// <summary>
    /// Longest a request waits for the OSDs (rados_osd_op_timeout) before it fails with an error
    /// the guest sees as VIRTIO_BLK_S_IOERR; 0 waits for as long as the cluster takes.
    /// </summary>
    public int IoTimeoutSeconds { get; init; } = DefaultIoTimeoutSeconds;

    public const int DefaultIoTimeoutSeconds = 30;

    public void Validate()
    {
        if (Id.Length == 0 || Id.StartsWith("client.", StringComparison.Ordinal))
            throw new ArgumentException($"Ceph id '{Id}' must be the user's name without 'client.' (e.g. admin)");
        if (ConnectTimeoutSeconds is < 1 or > 3600)
            throw new ArgumentException($"connect timeout {ConnectTimeoutSeconds} s must be between 1 and 3600");
        if (IoTimeoutSeconds is < 0 or > 86400)
            throw new ArgumentException($"I/O timeout {IoTimeoutSeconds} s must be between 0 (none) and 86400");
    }
}

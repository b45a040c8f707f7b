using VirtioSharp.Devices;
using VirtioSharp.Diagnostics;
using VirtioSharp.VhostUser.Protocol;

namespace VirtioSharp.VhostUser.Backend;

/// <summary>SET_FEATURES, SET_PROTOCOL_FEATURES and RESET_DEVICE: what the front-end agreed to, and starting over.</summary>
internal sealed partial class VhostUserSession
{
    private Verdict SetFeatures(ulong features)
    {
        var unknown = features & ~_offeredFeatures;
        if (unknown != 0)
            return Fail($"features 0x{unknown:x} ({VirtioFeatures.Describe(unknown, _device.FeatureName)}) were not offered");
        var changed = !_featuresSet || features != _features;
        var anyStarted = _vrings.Any(v => v.Started);
        // QEMU sends the same SET_FEATURES more than once per start (in-flight setup, then the start
        // itself): only new features, or features after rings have run, begin a new device start.
        var newStart = !anyStarted && (changed || _startedSinceFeatures);
        if (newStart)
        {
            _startedSinceFeatures = false;
            if (_device.Breaches.Total > 0)
            {
                // The breaches of the last start have been reported.
                _log.Info(_device.Breaches.Summary());
                _device.Breaches.Clear();
            }
        }
        _features = features;
        _featuresSet = true;
        if (!VirtioFeatures.Has(features, VirtioFeatures.Version1))
        {
            if (!_versionWarned)
            {
                _versionWarned = true;
                _log.Warn("front-end did not acknowledge VIRTIO_F_VERSION_1 (feature bit 32); serving the driver as a little-endian modern device");
            }
            // 6.1: a driver MUST accept VIRTIO_F_VERSION_1; strict=fail stops the rings at their first drain.
            if (_device.Breaches.Strict && (newStart || changed))
                _device.Breaches.Report("6.1", -1, -1, "VIRTIO_F_VERSION_1 accepted", "bit 32 clear in VHOST_USER_SET_FEATURES");
        }
        _device.Activate(features & ~VhostUserFeatures.ProtocolFeatures);
        // vhost-user.rst, "Ring states": without VHOST_USER_F_PROTOCOL_FEATURES all rings are enabled at once.
        if (!VirtioFeatures.Has(features, VhostUserFeatures.ProtocolFeaturesBit))
        {
            foreach (var v in _vrings)
                v.SetEnabled(true);
        }
        if (changed)
            _log.Info($"features agreed: {VirtioFeatures.Describe(features, _device.FeatureName)}");
        if (changed && anyStarted)
            Requeue("the features changed"); // EVENT_IDX and INDIRECT_DESC are fixed per queue object
        return Verdict.Done;
    }

    private Verdict SetProtocolFeatures(ulong features)
    {
        var unknown = features & ~OfferedProtocolFeatures;
        if (unknown != 0)
            return Fail($"protocol features 0x{unknown:x} ({VhostUserFeatures.DescribeProtocol(unknown)}) were not offered");
        _protocolFeatures = features;
        _log.Info($"protocol features agreed: {VhostUserFeatures.DescribeProtocol(features)}");
        return Verdict.Done;
    }

    private void ResetDevice()
    {
        foreach (var v in _vrings)
            v.Reset();
        SwapInflight(null);
        _features = 0;
        _featuresSet = false;
        _device.Reset();
        _log.Info("device reset by the front-end (VHOST_USER_RESET_DEVICE)");
    }
}

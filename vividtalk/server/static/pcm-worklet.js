// Live mode's microphone tap: posts each render quantum of the first input channel (float32) to
// the page, which resamples it to 16 kHz if needed and sends ~100 ms chunks over the WebSocket.
class PcmCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}

registerProcessor("pcm-capture", PcmCapture);
